"""How a job's worker shows it is alive, and when it counts as gone.

A worker holding work renews its claim every third of ``OPENCLAW_JOB_LEASE_S``: a batch
chunk run its lines' leases and the job's heartbeat (``jobs.batch``), a fine-tuning run
the job's heartbeat (``jobs.finetune``). It does so from a ``Keepalive`` thread, so
that a run busy elsewhere — waiting for a slow model, loading or saving weights, one
long training step — still counts as alive. Beat's watchdog task
(``jobs.resume_stalled``, every ``OPENCLAW_JOB_RESUME_TICK_S``) hands work whose claim
is older than the lease to another worker; each kind's ``resume_stalled`` says how.

Why a lease and not the broker's visibility timeout: a worker of the threads pool
killed with SIGKILL takes its unacknowledged messages with it until that timeout
(an hour by default: it must outlast the longest task, a fine-tuning run), and a
shorter one would hand a long task still running to a second worker. A lease is
renewed by the run itself, so it can be short and still never expire under a live run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType

from django.conf import settings
from django.db import DatabaseError, connections

logger = logging.getLogger(__name__)


def lease() -> timedelta:
    """How long a claim lasts without being renewed."""
    return timedelta(seconds=settings.OPENCLAW_JOB_LEASE_S)


def renew_every() -> float:
    """Seconds between renewals: a third of the lease, so two can be missed."""
    return settings.OPENCLAW_JOB_LEASE_S / 3


class Keepalive:
    """Inside a ``with`` block, a daemon thread calls ``renew()`` every
    ``renew_every()`` seconds. A failed renewal (the database away for a moment) is
    logged and tried again at the next one."""

    def __init__(self, renew: Callable[[], object], name: str = "job"):
        self._renew = renew
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"keepalive-{name}",
                                        daemon=True)

    def __enter__(self) -> Keepalive:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=renew_every() + 5)

    def _run(self) -> None:
        try:
            while not self._stop.wait(renew_every()):
                try:
                    self._renew()
                except DatabaseError as error:
                    logger.warning("%s: renewal failed, trying again: %s",
                                   self._thread.name, error)
        finally:
            connections.close_all()  # this thread's own connections
