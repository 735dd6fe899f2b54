"""The circuit breaker: one per model instance, its state in the Django cache (Redis),
so every web process and worker sees the same circuits.

closed → open: ``OPENCLAW_BREAKER_FAILURES`` failures that are the backend's fault
(retryable engine errors other than a too-long prompt) within
``OPENCLAW_BREAKER_WINDOW_S`` seconds (a fixed window starting at the first failure).
open: the instance is skipped for ``OPENCLAW_BREAKER_COOLDOWN_S`` seconds.
half-open: after the cooldown exactly one request probes the instance (the probe lock
is an atomic ``cache.add``); its success closes the circuit, its failure opens it again.

Cache keys, per endpoint id: ``breaker:<id>:fails`` (the window's failure counter),
``breaker:<id>:open`` (the time the cooldown ends, kept until a probe closes it) and
``breaker:<id>:probe`` (the probe lock).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import cache as default_cache
from django.core.cache.backends.base import BaseCache
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from inference.errors import BadRequest, EngineError

# An open circuit nobody probes for this long is forgotten (closed).
OPEN_KEY_TTL_S = 24 * 3600
# A probe lock outlives a probe that never reported back (a crashed process).
MIN_PROBE_TTL_S = 60


class CircuitState(models.TextChoices):
    CLOSED = "closed", _("closed")
    OPEN = "open", _("open")
    HALF_OPEN = "half_open", _("half-open")


@dataclass(frozen=True)
class Circuit:
    """One instance's circuit as seen now: its state and, when open, until when (epoch s)."""

    state: CircuitState
    open_until: float | None = None


def counts_as_failure(exc: BaseException) -> bool:
    """Only the backend's fault counts: timeouts, 5xx, connection errors, 429 … —
    not a client's bad request nor a prompt too long for this instance."""
    return isinstance(exc, EngineError) and exc.retryable and not isinstance(exc, BadRequest)


class Breaker:
    """Circuit bookkeeping for model instances; cheap to build, holds no state itself."""

    def __init__(self, failures: int | None = None, window_s: float | None = None,
                 cooldown_s: float | None = None, cache: BaseCache | None = None,
                 clock: Callable[[], float] = time.time):
        self.failures = failures or settings.OPENCLAW_BREAKER_FAILURES
        self.window_s = window_s or settings.OPENCLAW_BREAKER_WINDOW_S
        self.cooldown_s = cooldown_s or settings.OPENCLAW_BREAKER_COOLDOWN_S
        self.cache = cache or default_cache
        self.clock = clock

    @staticmethod
    def _key(endpoint_id: int, part: str) -> str:
        return f"breaker:{endpoint_id}:{part}"

    def state(self, endpoint_id: int) -> Circuit:
        """The circuit now, without taking the probe."""
        open_until = self.cache.get(self._key(endpoint_id, "open"))
        if open_until is None:
            return Circuit(CircuitState.CLOSED)
        if self.clock() < open_until:
            return Circuit(CircuitState.OPEN, open_until)
        return Circuit(CircuitState.HALF_OPEN, open_until)

    def allow(self, endpoint_id: int) -> tuple[bool, bool]:
        """(may this request call the instance, is it the half-open probe). Of concurrent
        callers on a half-open circuit only the one that takes the probe lock goes."""
        circuit = self.state(endpoint_id)
        if circuit.state == CircuitState.CLOSED:
            return True, False
        if circuit.state == CircuitState.OPEN:
            return False, False
        ttl = max(self.cooldown_s, MIN_PROBE_TTL_S)
        if self.cache.add(self._key(endpoint_id, "probe"), 1, timeout=ttl):
            return True, True
        return False, False

    def record_success(self, endpoint_id: int, probe: bool) -> bool:
        """A call succeeded; True when that closed the circuit (a successful probe)."""
        if not probe:
            return False
        self.reset(endpoint_id)
        return True

    def record_failure(self, endpoint_id: int, exc: BaseException, probe: bool) -> bool:
        """A call failed; True when that opened the circuit (the N-th failure in the
        window, or a failed probe). Failures that are not the backend's fault only give
        the probe back."""
        if not counts_as_failure(exc):
            if probe:
                self.release_probe(endpoint_id)
            return False
        if probe:
            self._open(endpoint_id)
            self.release_probe(endpoint_id)
            return True
        if self._count(endpoint_id) < self.failures:
            return False
        # add, not set: of processes counting past N at once only one opens (and reports).
        opened = self.cache.add(self._key(endpoint_id, "open"), self.clock() + self.cooldown_s,
                                timeout=OPEN_KEY_TTL_S)
        if opened:
            self.cache.delete(self._key(endpoint_id, "fails"))
        return opened

    def release_probe(self, endpoint_id: int) -> None:
        """Let the next request probe (this one ended without a verdict)."""
        self.cache.delete(self._key(endpoint_id, "probe"))

    def reset(self, endpoint_id: int) -> None:
        """Close the circuit and forget its failures."""
        self.cache.delete_many([self._key(endpoint_id, part)
                                for part in ("open", "fails", "probe")])

    def _open(self, endpoint_id: int) -> None:
        self.cache.set(self._key(endpoint_id, "open"), self.clock() + self.cooldown_s,
                       timeout=OPEN_KEY_TTL_S)
        self.cache.delete(self._key(endpoint_id, "fails"))

    def _count(self, endpoint_id: int) -> int:
        key = self._key(endpoint_id, "fails")
        # The first failure starts the window: the counter expires with it.
        self.cache.add(key, 0, timeout=self.window_s)
        try:
            return self.cache.incr(key)
        except ValueError:  # expired between add and incr: a new window
            self.cache.add(key, 1, timeout=self.window_s)
            return 1


def describe(circuit: Circuit) -> str:
    """``closed``, ``open until HH:MM:SS`` (local time) or ``half-open``, for the admin."""
    if circuit.state != CircuitState.OPEN:
        return str(circuit.state.label)
    assert circuit.open_until is not None  # an open circuit always has its end
    until = timezone.localtime(datetime.fromtimestamp(circuit.open_until, tz=UTC))
    return _("open until %(time)s") % {"time": until.strftime("%H:%M:%S")}
