"""Usage and audit logging off the hot path.

``log_usage(...)`` and ``core.audit.audit(...)`` only append a small dict to
an in-process buffer (a few microseconds). A daemon thread per process sends the
buffer, in batches, to the ``routing.write_usage`` / ``routing.write_audit`` Celery
tasks on the ``OPENCLAW_LOG_QUEUE`` queue; a worker writes each batch with one
``bulk_create``. When no worker consumes that queue the batches wait in the broker
and are written when one comes back. Each row's id is made before it is sent, so a batch the
broker delivers twice (``acks_late``, a worker killed mid-write) is written once.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from celery import shared_task
from django.contrib.admin.models import LogEntry
from django.contrib.auth.signals import user_login_failed
from django.db.models import Avg, Count, Q, Sum
from django.db.models.functions import TruncDate
from django.db.models.signals import post_save

from core.audit import TaskBuffer, audit, audit_buffer, send_to_task

from .usage_models import AuditEvent, UsageRecord

__all__ = ["TaskBuffer", "audit_buffer", "log_usage", "usage_buffer", "usage_summary",
           "write_audit", "write_usage"]

logger = logging.getLogger(__name__)


# --- tasks ----------------------------------------------------------------------------


def _when(value: Any) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(value)


@shared_task(name="routing.write_usage", ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def write_usage(records: list[dict]) -> int:
    """Write a batch of usage records (one INSERT; ids already written are skipped)."""
    rows = [UsageRecord(**{**r, "created_at": _when(r["created_at"])}) for r in records]
    UsageRecord.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


@shared_task(name="routing.write_audit", ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def write_audit(events: list[dict]) -> int:
    """Write a batch of audit events (one INSERT; ids already written are skipped)."""
    rows = [AuditEvent(**{**e, "created_at": _when(e["created_at"])}) for e in events]
    AuditEvent.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


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
