"""While Redis is away: what this process knows about it, and the counters it keeps
meanwhile.

Redis holds the cross-process state of the hot path — version tokens of the
per-process copies, the limits' counters, circuits, balancing statistics. When it stops
answering, a request does not fail: this process trusts the copies it holds
(``core.snapshot``), counts limits here (``LOCAL``), and skips circuit and balancing
bookkeeping. ``OUTAGE`` says whether Redis is away, and when to try it again (once per
``RETRY_S``, so requests in between do not each wait for a connection that will fail).
The first round trip that succeeds afterwards adds what was counted here to the Redis
counters (reconciliation), then runs the ``on_recovery`` hooks: every copy is dropped
and the changes this process made meanwhile are announced (``core.snapshot``).

What this gives, exactly (README "Operations"): a limit is enforced per process from
the value this process last read, so N processes may admit up to N times what is left;
a key created during the outage works (a process reads a key it has not seen from the
database); a key revoked, or a limit, rule or plugin changed, is seen by a process
holding the old copy only once Redis is back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import redis.exceptions
from django.db import InterfaceError, OperationalError

from .redis_pipeline import RedisUnavailable

logger = logging.getLogger(__name__)

RETRY_S = 1.0  # while Redis is away, how often one request tries it again
MAX_NOTED = 50_000  # counter values remembered from Redis (a new window's names replace them)

# Redis did not answer: the hot path's own client, or redis-py (Django's cache; a busy
# loading server is a ConnectionError there too).
UNAVAILABLE: tuple[type[Exception], ...] = (
    RedisUnavailable, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# The database did not answer (down, restarting, no free connection in time).
DB_UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError)

Increment = tuple[str, int, int]  # counter name, amount, seconds left in its window


class Outage:
    """Whether this process found Redis away, and when it may try again."""

    def __init__(self) -> None:
        self.down = False
        self.since = 0.0  # monotonic
        self.retry_at = 0.0  # monotonic: no round trip is tried before
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def on_recovery(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (no arguments, quick) each time Redis comes back."""
        if hook not in self._hooks:
            self._hooks.append(hook)

    def mark_down(self, reason: object = "") -> None:
        """A round trip failed: Redis is away (the next try in ``RETRY_S``)."""
        now = time.monotonic()
        with self._lock:
            if self.down:  # already known: the next try stays when it was due
                return
            self.down, self.since, self.retry_at = True, now, now + RETRY_S
        logger.warning("Redis is unavailable (%s): this process keeps answering with its "
                       "own copies and counts limits itself until it returns", reason)

    def may_try(self) -> bool:
        """Whether this caller should try Redis now (at most one caller per ``RETRY_S``
        while it is away); the others answer without it."""
        if not self.down:
            return True
        now = time.monotonic()
        with self._lock:
            if now < self.retry_at:
                return False
            self.retry_at = now + RETRY_S
            return True

    def mark_up(self, reconciled: int) -> None:
        with self._lock:
            if not self.down:
                return
            self.down = False
            away = time.monotonic() - self.since
        LOCAL.forget()
        for hook in self._hooks:
            hook()
        logger.info("Redis is back after %.1f s; %d counters this process kept were "
                    "added to it", away, reconciled)


class LocalCounters:
    """This process's counters while Redis is away: each starts from the value this
    process last read from Redis (``note``) and counts on; what is added here is kept
    (``pending``) to be added to Redis when it returns. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._noted: dict[str, int] = {}
        self._values: dict[str, list[float]] = {}  # name -> [value, expires (epoch s)]
        self._pending: dict[str, list[float]] = {}  # name -> [amount, expires (epoch s)]

    def note(self, names: list[str], values: list[int]) -> None:
        """Remember counters' values as Redis gave them (the normal path: no lock)."""
        if len(self._noted) > MAX_NOTED:
            self._noted = {}
        self._noted.update(zip(names, values, strict=False))

    def _entry(self, name: str, ttl: int, now: float) -> list[float]:
        entry = self._values.get(name)
        if entry is None or entry[1] <= now:
            entry = self._values[name] = [float(self._noted.get(name, 0)), now + ttl]
        return entry

    def admit(self, counters: list[tuple[str, int, int, int, int]]) -> tuple[int, list[int]]:
        """``routing.limits.ADMIT`` here: ``counters`` as (name, ceiling, amount that must
        fit, amount added, ttl). (0, values after adding) when each has room, else
        (j, values as they are) naming the first counter j (from 1) without room."""
        now = time.time()
        with self._lock:
            entries = [self._entry(name, ttl, now) for name, _c, _f, _a, ttl in counters]
            for index, (entry, (_n, ceiling, fit, _a, _t)) in enumerate(
                    zip(entries, counters, strict=True)):
                if entry[0] + fit > ceiling:
                    return index + 1, [int(e[0]) for e in entries]
            for entry, (name, _c, _f, added, _t) in zip(entries, counters, strict=True):
                self._add(name, entry, added)
            return 0, [int(e[0]) for e in entries]

    def add(self, increments: list[Increment]) -> list[int]:
        """Add to counters; their values after."""
        now = time.time()
        with self._lock:
            values = []
            for name, amount, ttl in increments:
                entry = self._entry(name, ttl, now)
                self._add(name, entry, amount)
                values.append(int(entry[0]))
            return values

    def _add(self, name: str, entry: list[float], amount: int) -> None:
        entry[0] += amount
        pending = self._pending.setdefault(name, [0, entry[1]])
        pending[0] += amount

    def read(self, names: list[str]) -> list[int]:
        now = time.time()
        with self._lock:
            return [int(e[0]) if (e := self._values.get(name)) and e[1] > now
                    else self._noted.get(name, 0) for name in names]

    def drain(self) -> list[Increment]:
        """What was counted here, to add to Redis (counters whose window has ended are
        left out: nothing reads them any more)."""
        now = time.time()
        with self._lock:
            pending, self._pending = self._pending, {}
        return [(name, int(amount), math.ceil(expires - now))
                for name, (amount, expires) in pending.items()
                if amount and expires - now >= 1]

    def restore(self, increments: list[Increment]) -> None:
        """Keep increments that could not be sent (Redis went away again)."""
        now = time.time()
        with self._lock:
            for name, amount, ttl in increments:
                pending = self._pending.setdefault(name, [0, now + ttl])
                pending[0] += amount

    def pending(self) -> int:
        """How many counters wait to be added to Redis."""
        return len(self._pending)

    def forget(self) -> None:
        """Redis is the authority again: drop the values counted here."""
        with self._lock:
            self._values = {}


OUTAGE = Outage()
LOCAL = LocalCounters()
