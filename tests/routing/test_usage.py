"""Usage and audit logging: buffered in-process, written in batches by the
``routing.write_usage`` / ``write_audit`` tasks; audit sources (key lifecycle, admin
changes, failed logins); the admin's lists and per key/model/day summary."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth import authenticate
from django.contrib.contenttypes.models import ContentType

from core.audit import audit
from routing.keys import create_key, revoke_key, rotate_key
from routing.models import ModelEndpoint
from routing.usage import (
    TaskBuffer,
    audit_buffer,
    log_usage,
    retry_delay,
    usage_buffer,
    usage_summary,
    write_audit,
    write_usage,
)
from routing.usage_models import AuditEvent, UsageRecord


@pytest.fixture
def sent(monkeypatch):
    """What the buffers would hand to the broker (nothing leaves the process)."""
    batches: list[list[dict]] = []
    for buffer in (usage_buffer, audit_buffer):
        buffer.flush()
        monkeypatch.setattr(buffer, "_send", batches.append)

    def rows() -> list[dict]:
        usage_buffer.flush()
        audit_buffer.flush()
        return [row for batch in batches for row in batch]

    return rows


def test_log_usage_only_buffers_the_record(sent):
    log_usage(key_prefix="oc_abc", user="7", model="echo", instance=3, tokens_in=5,
              tokens_out=9, latency_ms=12.5, ttft_ms=1.5, status=200, request_id="req-1")

    [row] = sent()
    assert row["key_prefix"] == "oc_abc" and row["instance"] == "3"
    assert (row["tokens_in"], row["tokens_out"], row["ttft_ms"]) == (5, 9, 1.5)


def test_buffer_keeps_rows_when_the_broker_is_away():
    attempts: list[int] = []

    def failing(rows: list[dict]) -> None:
        attempts.append(len(rows))
        raise ConnectionError("broker away")

    buffer = TaskBuffer(failing, "test", max_batch=2)
    for n in range(3):
        buffer._items.append({"n": n})  # bypass the flusher thread

    assert buffer.flush() is False
    assert buffer.pending() == 3 and attempts == [2]


@pytest.mark.django_db
def test_write_tasks_are_idempotent():
    record = {"id": uuid.uuid4().hex, "created_at": time.time(), "key_prefix": "oc_x",
              "model": "echo", "tokens_in": 1, "tokens_out": 2, "status": 200}
    event = {"id": uuid.uuid4().hex, "created_at": time.time(), "action": "key.create",
             "actor": "", "target": "oc_x", "detail": {}}

    write_usage([record])
    write_usage([record])  # the broker delivered the batch again
    write_audit([event])
    write_audit([event])

    assert UsageRecord.objects.count() == 1
    assert AuditEvent.objects.count() == 1


def test_a_write_retry_waits_longer_each_time_and_below_the_visibility_timeout(settings):
    settings.OPENCLAW_LOG_RETRY_MAX_S = 5.0
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 9}

    delays = [retry_delay(tries) for tries in range(8)]

    assert 0.75 <= delays[0] <= 1.0 and 1.5 <= delays[1] <= 2.0
    assert all(1.5 <= d <= 3.0 for d in delays[2:])  # a third of the visibility timeout


@pytest.mark.django_db(transaction=True)
def test_a_row_the_database_refuses_costs_only_that_row_not_its_batch():
    good = [{"id": uuid.uuid4().hex, "created_at": time.time(), "key_prefix": "oc_ok",
             "model": "echo", "tokens_in": n, "tokens_out": 1, "status": 200}
            for n in range(3)]
    bad = {**good[0], "id": uuid.uuid4().hex, "tokens_in": 2**40}  # out of its column's range

    assert write_usage([good[0], bad, *good[1:]]) == 3

    assert UsageRecord.objects.filter(key_prefix="oc_ok").count() == 3


@pytest.mark.django_db
def test_key_create_rotate_and_revoke_are_audited(sent):
    key, _secret = create_key("audited")
    successor, _secret = rotate_key(key)
    revoke_key(successor)

    events = [(e["action"], e["target"]) for e in sent()]
    assert events == [("key.create", key.prefix), ("key.rotate", key.prefix),
                      ("key.revoke", successor.prefix)]


@pytest.mark.django_db
def test_admin_changes_and_failed_logins_are_audited(sent, admin_user):
    endpoint = ModelEndpoint.objects.create(name="echo", engine="echo")
    LogEntry.objects.log_actions(admin_user.pk, [endpoint], ADDITION,
                                 change_message=[{"added": {}}], single_object=True)
    authenticate(username="mallory", password="wrong")
    audit("plugin.block", actor="pii-filter", target="conv-1", detail={"rule": "email"})

    events = {e["action"]: e for e in sent()}
    assert events["admin.add"]["actor"] == admin_user.username
    assert events["admin.add"]["target"].startswith(f"routing.modelendpoint:{endpoint.pk}")
    assert events["auth.login_failed"]["actor"] == "mallory"
    assert events["plugin.block"]["detail"] == {"rule": "email"}


@pytest.mark.django_db
def test_usage_summary_groups_per_key_model_and_day():
    def record(day: int, key: str, model: str, status: int = 200) -> UsageRecord:
        return UsageRecord(created_at=datetime(2026, 11, day, 12, tzinfo=UTC), key_prefix=key,
                           model=model, tokens_in=10, tokens_out=5, latency_ms=20,
                           status=status)

    UsageRecord.objects.bulk_create([record(1, "oc_a", "echo"), record(1, "oc_a", "echo", 500),
                                     record(1, "oc_b", "echo"), record(2, "oc_a", "echo")])

    summary = usage_summary()

    assert [(r["day"].day, r["key_prefix"], r["requests"], r["errors"], r["tokens_in"])
            for r in summary] == [(2, "oc_a", 1, 0, 10), (1, "oc_a", 2, 1, 20),
                                  (1, "oc_b", 1, 0, 10)]


@pytest.mark.django_db
def test_admin_lists_usage_audit_and_the_summary(admin_client):
    UsageRecord.objects.create(created_at=datetime.now(UTC), key_prefix="oc_listed",
                               model="echo")
    AuditEvent.objects.create(created_at=datetime.now(UTC), action="key.create",
                              target="oc_listed")
    ContentType.objects.clear_cache()

    usage = admin_client.get("/admin/routing/usagerecord/?model=echo")
    events = admin_client.get("/admin/routing/auditevent/?action=key.create")
    summary = admin_client.get("/admin/routing/usagerecord/summary/?key=oc_listed")

    assert usage.status_code == events.status_code == summary.status_code == 200
    assert b"oc_listed" in usage.content and b"oc_listed" in events.content
    assert b"oc_listed" in summary.content
