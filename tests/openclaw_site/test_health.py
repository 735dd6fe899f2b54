"""/healthz and /readyz against the real embedded PostgreSQL, Redis and a real worker."""

import os

import pytest


def test_healthz_answers_ok_without_touching_dependencies(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_names_each_dependency_and_is_ready(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "broker", "channel_layer", "cache"}
    assert all(check["ok"] for check in body["checks"].values())


@pytest.mark.django_db
def test_readyz_reports_503_and_names_the_broken_dependency(client, settings):
    # given: the cache points at a socket nobody listens on
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "unix:///nonexistent/redis.sock",
        }
    }

    # when
    response = client.get("/readyz")

    # then
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["cache"]["ok"] is False
    assert body["checks"]["cache"]["error"]
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_task_sent_from_web_is_run_by_a_separate_worker_process(client, celery_worker_process):
    response = client.get("/readyz?workers=1")

    assert response.status_code == 200
    worker = response.json()["checks"]["worker"]
    assert worker["ok"] is True
    assert worker["worker_pid"] == celery_worker_process.pid
    assert worker["worker_pid"] != os.getpid()
