"""The audit trail's entry point, ``audit(action, actor=..., target=..., detail=...)``, and
``TaskBuffer``, which hands rows to a Celery task off the caller's path.

``audit`` is callable from anywhere (views, admin, signals, plugins, Celery tasks). It
only appends to an in-process buffer and returns: a background thread ships the events
in batches to the ``routing.write_audit`` task (by name: the writer lives in
``routing.usage``, above this layer), on ``OPENCLAW_LOG_QUEUE``, so an audit call never
waits on the database or the broker.
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

from celery import current_app
from django.conf import settings

logger = logging.getLogger(__name__)

AUDIT_TASK = "routing.write_audit"


class TaskBuffer:
    """Items waiting to be sent to a Celery task in batches by a background thread.

    ``add`` never blocks and never raises; past ``max_pending`` items (a broker that
    has been unreachable for long) new items are dropped and counted in ``dropped``.
    While the broker is away the items wait here, tried again every second or so (the
    first failure is logged, and the send that works again).
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
        self._failing = False  # the last send failed

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
            batch: list[dict] = []
            while self._items and len(batch) < self.max_batch:
                item = self._items.popleft()
                # Made here, off the caller's path; kept if the send is retried.
                item.setdefault("id", uuid.uuid4().hex)
                batch.append(item)
            try:
                self._send(batch)
            except Exception:  # noqa: BLE001 - any broker failure: keep the rows
                self._items.extendleft(reversed(batch))
                if not self._failing:
                    logger.warning("%s: could not hand %d rows to the broker; keeping them "
                                   "and trying again", self.name, len(self._items),
                                   exc_info=True)
                self._failing = True
                return False
            if self._failing:
                self._failing = False
                logger.info("%s: the broker takes rows again", self.name)
        if self.dropped:
            logger.error("%s: dropped %d rows (buffer full)", self.name, self.dropped)
            self.dropped = 0
        return True


def send_to_task(task_name: str) -> Callable[[list[dict]], None]:
    """A ``TaskBuffer`` sender: each batch to the Celery task ``task_name`` on
    ``OPENCLAW_LOG_QUEUE``."""

    def send(rows: list[dict]) -> None:
        current_app.send_task(task_name, (rows,), queue=settings.OPENCLAW_LOG_QUEUE)

    return send


audit_buffer = TaskBuffer(send_to_task(AUDIT_TASK), "audit")


def audit(action: str, *, actor: str = "", target: str = "", detail: dict | None = None) -> None:
    """Record that ``actor`` did ``action`` to ``target``; never blocks, never raises.

    ``action`` is a short dotted name (``key.create``, ``admin.change``,
    ``plugin.block``, ``auth.login_failed``); ``detail`` must be JSON-serialisable.
    """
    audit_buffer.add({
        "created_at": time.time(), "action": str(action)[:64],
        "actor": str(actor)[:150], "target": str(target)[:255], "detail": dict(detail or {}),
    })
