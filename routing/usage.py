"""Usage and audit logging off the hot path.

``log_usage(...)`` and ``core.audit.audit(...)`` only append a small dict to
an in-process buffer (a few microseconds). A daemon thread per process sends the
buffer, in batches, to the ``routing.write_usage`` / ``routing.write_audit`` Celery
tasks on the ``OPENCLAW_LOG_QUEUE`` queue; a worker writes each batch with one
``bulk_create``. When no worker consumes that queue the batches wait in the broker
and are written when one comes back. Each row's id is made before it is sent, so a batch the
broker delivers twice (``acks_late``, a worker killed mid-write) is written once.

Nothing is lost to an outage. While the broker (Redis) is away a process keeps its rows
in memory (``TaskBuffer``: up to 100 000, then new ones are dropped and the count
logged) and sends them when it returns. While the database is away a batch's task is
retried, for as long as it takes, after 1, 2, 4 … seconds up to ``retry_delay``'s
ceiling (``OPENCLAW_LOG_RETRY_MAX_S``, and below the broker's visibility timeout, so a
waiting retry is never handed out twice); meanwhile the batch waits in the broker as
one message. Any other error is not retried: the batch is then written row by row, so
only a row the database refuses is lost (and logged).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from celery import Task, shared_task
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth.signals import user_login_failed
from django.db import DatabaseError, close_old_connections, models
from django.db.models import Avg, Count, Q, Sum
from django.db.models.functions import TruncDate
from django.db.models.signals import post_save

from core.audit import TaskBuffer, audit, audit_buffer, send_to_task
from core.outage import DB_UNAVAILABLE

from .usage_models import AuditEvent, UsageRecord

__all__ = ["TaskBuffer", "audit_buffer", "log_usage", "usage_buffer", "usage_summary",
           "write_audit", "write_usage"]

logger = logging.getLogger(__name__)


# --- tasks ----------------------------------------------------------------------------


def _when(value: Any) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(value)


def retry_delay(retries: int) -> float:
    """Seconds before the next try of a batch the database could not take: doubling from
    1 s, jittered, at most ``OPENCLAW_LOG_RETRY_MAX_S`` and a third of the broker's
    visibility timeout (a retry waits in the worker, unacknowledged: past that timeout
    the broker would hand it out a second time)."""
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    ceiling = max(1.0, min(settings.OPENCLAW_LOG_RETRY_MAX_S, visibility / 3))
    return min(ceiling, 2.0 ** min(retries, 16)) * random.uniform(0.75, 1.0)


def write_rows(task: Task, model: type[models.Model], rows: Sequence[models.Model]) -> int:
    """One INSERT of ``rows`` (ids already written are skipped); retried (``task``) while
    the database is away; row by row when the batch has a row the database refuses."""
    try:
        model._default_manager.bulk_create(rows, ignore_conflicts=True)
    except DB_UNAVAILABLE as exc:
        close_old_connections()  # a broken connection goes back to the pool, discarded
        raise task.retry(exc=exc, countdown=retry_delay(task.request.retries)) from exc
    except DatabaseError:
        logger.exception("%s: a batch of %d rows failed; writing them one by one",
                         model.__name__, len(rows))
        close_old_connections()
        return sum(_write_one(task, model, row) for row in rows)
    return len(rows)


def _write_one(task: Task, model: type[models.Model], row: models.Model) -> int:
    try:
        model._default_manager.bulk_create([row], ignore_conflicts=True)
    except DB_UNAVAILABLE as exc:  # went away meanwhile: the whole batch again, later
        close_old_connections()
        raise task.retry(exc=exc, countdown=retry_delay(task.request.retries)) from exc
    except DatabaseError:
        logger.exception("%s %s: the database refused this row; it is not written",
                         model.__name__, row.pk)
        close_old_connections()
        return 0
    return 1


@shared_task(bind=True, name="routing.write_usage", ignore_result=True, acks_late=True,
             reject_on_worker_lost=True, max_retries=None)
def write_usage(self: Task, records: list[dict]) -> int:
    """Write a batch of usage records (one INSERT; ids already written are skipped)."""
    rows = [UsageRecord(**{**r, "created_at": _when(r["created_at"])}) for r in records]
    return write_rows(self, UsageRecord, rows)


@shared_task(bind=True, name="routing.write_audit", ignore_result=True, acks_late=True,
             reject_on_worker_lost=True, max_retries=None)
def write_audit(self: Task, events: list[dict]) -> int:
    """Write a batch of audit events (one INSERT; ids already written are skipped)."""
    rows = [AuditEvent(**{**e, "created_at": _when(e["created_at"])}) for e in events]
    return write_rows(self, AuditEvent, rows)


usage_buffer = TaskBuffer(send_to_task("routing.write_usage"), "usage")


def log_usage(*, key_prefix: str = "", user: str = "", model: str = "",
              instance: int | str | None = None, tokens_in: int = 0, tokens_out: int = 0,
              latency_ms: float = 0.0, ttft_ms: float | None = None, status: int = 200,
              endpoint: str = "chat", request_id: str = "") -> None:
    """Record one model call; returns at once (a few µs), the row is written later by
    a worker. ``latency_ms`` is the whole request, ``ttft_ms`` the first token (streams)."""
    usage_buffer.add({
        "created_at": time.time(), "key_prefix": key_prefix,
        "user": str(user)[:150], "endpoint": endpoint, "model": model[:200],
        "instance": "" if instance is None else str(instance), "tokens_in": int(tokens_in),
        "tokens_out": int(tokens_out), "latency_ms": float(latency_ms),
        "ttft_ms": None if ttft_ms is None else float(ttft_ms), "status": int(status),
        "request_id": request_id[:64]})


# --- summaries ------------------------------------------------------------------------


def usage_summary(since: date | None = None, until: date | None = None,
                  key_prefix: str = "", model: str = "") -> list[dict[str, Any]]:
    """Usage per key, model and UTC day (newest day first): requests, errors, tokens
    in/out and mean latency."""
    rows = UsageRecord.objects.all()
    if since:
        rows = rows.filter(created_at__gte=datetime.combine(since, datetime.min.time(), UTC))
    if until:
        end = datetime.combine(until, datetime.min.time(), UTC) + timedelta(days=1)
        rows = rows.filter(created_at__lt=end)
    if key_prefix:
        rows = rows.filter(key_prefix=key_prefix)
    if model:
        rows = rows.filter(model=model)
    return list(
        rows.annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day", "key_prefix", "model")
        .annotate(requests=Count("id"), errors=Count("id", filter=Q(status__gte=400)),
                  tokens_in=Sum("tokens_in"), tokens_out=Sum("tokens_out"),
                  latency_ms=Avg("latency_ms"))
        .order_by("-day", "key_prefix", "model"))


# --- audit sources: Django admin changes, failed logins --------------------------------

ADMIN_ACTIONS = {1: "admin.add", 2: "admin.change", 3: "admin.delete"}


def admin_logged(sender: type, instance: Any, created: bool, **kwargs: Any) -> None:
    """Every change made through the Django admin (registry, rules, plugins, keys…)."""
    if not created:
        return
    content_type = instance.content_type
    label = f"{content_type.app_label}.{content_type.model}" if content_type else ""
    audit(ADMIN_ACTIONS.get(instance.action_flag, "admin.other"),
          actor=instance.user.get_username() if instance.user_id else "",
          target=f"{label}:{instance.object_id or ''} {instance.object_repr}".strip(),
          detail={"change": instance.get_change_message()})


def login_failed(sender: Any, credentials: dict, request: Any = None, **kwargs: Any) -> None:
    address = request.META.get("REMOTE_ADDR", "") if request is not None else ""
    audit("auth.login_failed", actor=str(credentials.get("username", "")),
          detail={"address": address})


def connect_signals() -> None:
    """Called from ``RoutingConfig.ready()``."""
    post_save.connect(admin_logged, sender=LogEntry, dispatch_uid="routing.usage.admin_logged")
    user_login_failed.connect(login_failed, dispatch_uid="routing.usage.login_failed")
