"""Session fixtures: the embedded PostgreSQL + pgvector and Redis that the
settings point at, started once for the run and stopped after it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openclaw_site.embedded import EmbeddedPostgres, EmbeddedRedis

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def embedded_services():
    from django.conf import settings

    pg = EmbeddedPostgres(settings.EMBEDDED_PG_DIR, settings.EMBEDDED_DB_NAME)
    redis = EmbeddedRedis(settings.EMBEDDED_REDIS_DIR)
    pg.start()
    redis.start(tie_to_parent=True)
    yield pg, redis
    from django.db import connections

    connections.close_all()
    redis.stop()
    pg.stop()
    shutil.rmtree(settings.DATA_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(embedded_services):
    """The test database lives in the embedded server started above."""


@pytest.fixture(scope="session")
def celery_worker_process(embedded_services):
    """A real Celery worker process on the test settings' broker."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", PYTHONUNBUFFERED="1")
    log = open(Path(os.environ["OPENCLAW_TEST_DATA_DIR"]) / "worker.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "openclaw_site",
            "worker",
            "-P",
            "threads",
            "-c",
            "2",
            "-Q",
            "default,cpu,batch",
            "-n",
            f"test-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
        ],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    from openclaw_site.celery import app

    deadline = time.monotonic() + 60
    while not app.control.ping(timeout=0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"celery worker did not start: {log.name}")
    yield process
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()
