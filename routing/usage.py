"""Usage and audit logging off the hot path.

``log_usage(...)`` and ``openclaw_site.audit.audit(...)`` only append a small dict to
an in-process buffer (a few microseconds). A daemon thread per process sends the
buffer, in batches, to the ``routing.write_usage`` / ``routing.write_audit`` Celery
tasks on the ``OPENCLAW_LOG_QUEUE`` queue; a worker writes each batch with one
``bulk_create``. When no worker consumes that queue the batches wait in the broker
and are written when one comes back. Each row's id is made before it is sent, so a batch the
broker delivers twice (``acks_late``, a worker killed mid-write) is written once.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from celery import shared_task
from django.db.models import Avg, Count, Q, Sum
from django.db.models.functions import TruncDate

logger = logging.getLogger(__name__)


class TaskBuffer:
    """Items waiting to be sent to a Celery task in batches by a background thread.

    ``add`` never blocks and never raises; past ``max_pending`` items (a broker that
    has been unreachable for long) new items are dropped and counted in ``dropped``.
    """

    def __init__(self, send: Callable[[list[dict]], None], name: str, max_batch: int = 500,
                 interval_s: float = 0.25, max_pending: int = 100_000):
        self._send, self.name = send, name
        self.max_batch, self.interval_s, self.max_pending = max_batch, interval_s, max_pending
        self._items: deque[dict] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self.dropped = 0

    def add(self, item: dict) -> None:
        if self._pid != os.getpid():
            self._start()
        if len(self._items) >= self.max_pending:
            self.dropped += 1
            return
        self._items.append(item)
        if len(self._items) >= self.max_batch:
            self._wake.set()

    def pending(self) -> int:
        return len(self._items)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            if self._pid is not None:  # a forked child: the parent sends its own copies
                self._items = deque()
            self._pid = os.getpid()
            threading.Thread(target=self._run, name=f"{self.name}-flusher", daemon=True).start()
            atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if not self.flush():
                time.sleep(1.0)  # the broker is away: keep the items, try again soon

    def flush(self) -> bool:
        """Send everything buffered now; False (items kept) when sending failed."""
        while self._items:
            batch = []
            while self._items and len(batch) < self.max_batch:
                item = self._items.popleft()
                # Made here, off the caller's path; kept if the send is retried.
                item.setdefault("id", uuid.uuid4().hex)
                batch.append(item)
            try:
                self._send(batch)
            except Exception:  # noqa: BLE001 - any broker failure: keep the rows
                self._items.extendleft(reversed(batch))
                logger.warning("%s: could not hand %d rows to the broker; will retry",
                               self.name, len(batch), exc_info=True)
                return False
        if self.dropped:
            logger.error("%s: dropped %d rows (buffer full)", self.name, self.dropped)
            self.dropped = 0
        return True


# --- tasks ----------------------------------------------------------------------------


def _when(value: Any) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(value)


@shared_task(name="routing.write_usage", ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def write_usage(records: list[dict]) -> int:
    """Write a batch of usage records (one INSERT; ids already written are skipped)."""
    from .usage_models import UsageRecord

    rows = [UsageRecord(**{**r, "created_at": _when(r["created_at"])}) for r in records]
    UsageRecord.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


@shared_task(name="routing.write_audit", ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def write_audit(events: list[dict]) -> int:
    """Write a batch of audit events (one INSERT; ids already written are skipped)."""
    from .usage_models import AuditEvent

    rows = [AuditEvent(**{**e, "created_at": _when(e["created_at"])}) for e in events]
    AuditEvent.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def _queue() -> str:
    from django.conf import settings

    return settings.OPENCLAW_LOG_QUEUE


usage_buffer = TaskBuffer(lambda rows: write_usage.apply_async((rows,), queue=_queue()),
                          "usage")
audit_buffer = TaskBuffer(lambda rows: write_audit.apply_async((rows,), queue=_queue()),
                          "audit")


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
    from .usage_models import UsageRecord

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
    from openclaw_site.audit import audit

    if not created:
        return
    content_type = instance.content_type
    label = f"{content_type.app_label}.{content_type.model}" if content_type else ""
    audit(ADMIN_ACTIONS.get(instance.action_flag, "admin.other"),
          actor=instance.user.get_username() if instance.user_id else "",
          target=f"{label}:{instance.object_id or ''} {instance.object_repr}".strip(),
          detail={"change": instance.get_change_message()})


def login_failed(sender: Any, credentials: dict, request: Any = None, **kwargs: Any) -> None:
    from openclaw_site.audit import audit

    address = request.META.get("REMOTE_ADDR", "") if request is not None else ""
    audit("auth.login_failed", actor=str(credentials.get("username", "")),
          detail={"address": address})


def connect_signals() -> None:
    """Called from ``RoutingConfig.ready()``."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.auth.signals import user_login_failed
    from django.db.models.signals import post_save

    post_save.connect(admin_logged, sender=LogEntry, dispatch_uid="routing.usage.admin_logged")
    user_login_failed.connect(login_failed, dispatch_uid="routing.usage.login_failed")
