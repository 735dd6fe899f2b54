"""Balancing: the order in which to try the instances of one model name.

Strategies (``ModelEndpoint.balancing``; a name's strategy is its first instance's):

* ``weighted`` — weighted random without replacement (the default);
* ``least_busy`` — fewest requests in flight first, ties broken by weighted random;
* ``latency`` — lowest recent time to first token first (an EWMA); instances with no
  measurement yet come first, so that they get measured.

Instances with weight 0 are drained (never tried); those whose circuit is not closed
(``routing.breaker``) come last. The statistics live in the Django cache (Redis, shared
by every process), per endpoint id:

* ``balance:<id>:inflight`` — requests in flight, ``incr``/``decr``; the key expires
  ``INFLIGHT_TTL_S`` after it was created, so the counts of a process that crashed
  mid-request do not skew the choice for long (a count can then read low for a while:
  harmless, it is a hint);
* ``balance:<id>:ttft`` — the EWMA of the time to first token in seconds. Updated by
  read-modify-write: two processes updating it at once can lose one sample, which is
  acceptable for a moving average.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache as default_cache
from django.core.cache.backends.base import BaseCache

from .breaker import Breaker
from .models import Balancing, ModelEndpoint

INFLIGHT_TTL_S = 600
TTFT_TTL_S = 24 * 3600
EWMA_ALPHA = 0.3  # weight of the newest sample


@dataclass
class Stats:
    """What the strategies look at, per endpoint id; read in one cache round trip."""

    in_flight: dict[int, int] = field(default_factory=dict)
    ttft: dict[int, float] = field(default_factory=dict)
    circuit_closed: dict[int, bool] = field(default_factory=dict)


class Balancer:
    """In-flight counts and time-to-first-token averages; holds no state itself."""

    def __init__(self, cache: BaseCache | None = None):
        self.cache = cache or default_cache

    @staticmethod
    def _key(endpoint_id: int, part: str) -> str:
        return f"balance:{endpoint_id}:{part}"

    def acquire(self, endpoint_id: int) -> None:
        """One more request in flight on the instance."""
        key = self._key(endpoint_id, "inflight")
        try:
            self.cache.incr(key)
        except ValueError:  # no counter yet (or it expired): start one with its TTL
            if not self.cache.add(key, 1, timeout=INFLIGHT_TTL_S):
                self.cache.incr(key)

    def release(self, endpoint_id: int) -> None:
        """One request less in flight (a counter that expired meanwhile stays gone)."""
        try:
            self.cache.decr(self._key(endpoint_id, "inflight"))
        except ValueError:
            pass

    def observe_ttft(self, endpoint_id: int, seconds: float) -> float:
        """Fold one time-to-first-token sample into the instance's average; the new one."""
        key = self._key(endpoint_id, "ttft")
        old = self.cache.get(key)
        new = seconds if old is None else EWMA_ALPHA * seconds + (1 - EWMA_ALPHA) * old
        self.cache.set(key, new, timeout=TTFT_TTL_S)
        return new

    def stats(self, endpoint_ids: Iterable[int], strategy: str) -> Stats:
        """Circuits (always) and the statistics ``strategy`` needs, in one ``get_many``."""
        ids = list(endpoint_ids)
        keys = self.stat_keys(ids, strategy)
        return self.parse(ids, keys, self.cache.get_many(list(keys)))

    def stats_for(self, ids_by_strategy: dict[str, list[int]]) -> Stats:
        """``stats`` of several models' instances (ids by strategy), in one ``get_many``."""
        keys = self.keys_for(ids_by_strategy)
        return self.parse([i for ids in ids_by_strategy.values() for i in ids], keys,
                          self.cache.get_many(list(keys)))

    @classmethod
    def keys_for(cls, ids_by_strategy: dict[str, list[int]]) -> dict[str, tuple[str, int]]:
        keys: dict[str, tuple[str, int]] = {}
        for strategy, ids in ids_by_strategy.items():
            keys.update(cls.stat_keys(ids, strategy))
        return keys

    @classmethod
    def stat_keys(cls, ids: list[int], strategy: str) -> dict[str, tuple[str, int]]:
        """The cache keys ``stats`` reads: key → (what, endpoint id)."""
        keys = {Breaker._key(i, "open"): ("open", i) for i in ids}
        if strategy == Balancing.LEAST_BUSY:
            keys.update({cls._key(i, "inflight"): ("inflight", i) for i in ids})
        elif strategy == Balancing.LATENCY:
            keys.update({cls._key(i, "ttft"): ("ttft", i) for i in ids})
        return keys

    @staticmethod
    def parse(ids: Iterable[int], keys: dict[str, tuple[str, int]],
              found: dict[str, Any]) -> Stats:
        """``Stats`` from the values found for ``stat_keys`` (missing keys absent)."""
        stats = Stats(circuit_closed={i: True for i in ids})
        for key, value in found.items():
            part, endpoint_id = keys[key]
            if part == "open":
                stats.circuit_closed[endpoint_id] = False
            elif part == "inflight":
                stats.in_flight[endpoint_id] = max(0, int(value))
            else:
                stats.ttft[endpoint_id] = float(value)
        return stats


def strategy_of(instances: list[ModelEndpoint]) -> str:
    """The strategy of a model name: its first instance's (lowest id)."""
    if not instances:
        return Balancing.WEIGHTED
    return min(instances, key=lambda i: i.pk or 0).balancing or Balancing.WEIGHTED


def order(instances: list[ModelEndpoint], strategy: str, stats: Stats,
          rng: random.Random | None = None) -> list[ModelEndpoint]:
    """The instances in the order to try them (see the module docstring)."""
    usable = [i for i in instances if i.weight > 0]
    closed = [i for i in usable if stats.circuit_closed.get(i.pk, True)]
    not_closed = [i for i in usable if not stats.circuit_closed.get(i.pk, True)]
    ranked = weighted_shuffle(closed, rng)
    if strategy == Balancing.LEAST_BUSY:
        ranked.sort(key=lambda i: stats.in_flight.get(i.pk, 0))  # stable: ties stay random
    elif strategy == Balancing.LATENCY:
        ranked.sort(key=lambda i: (i.pk in stats.ttft, stats.ttft.get(i.pk, 0.0)))
    return ranked + weighted_shuffle(not_closed, rng)


def weighted_shuffle(items: list[ModelEndpoint],
                     rng: random.Random | None = None) -> list[ModelEndpoint]:
    """Weighted random order without replacement (weights > 0); ``rng`` defaults to the
    ``random`` module's."""
    items, ordered = list(items), []
    while items:
        pick = (rng or random).choices(items, weights=[i.weight for i in items])[0]
        items.remove(pick)
        ordered.append(pick)
    return ordered


def disagreeing_names(rows: Iterable[tuple[str, str]]) -> list[str]:
    """Model names whose instances ask for different strategies, from (name, balancing)
    rows; the first instance's strategy is the one that applies."""
    seen: dict[str, set[str]] = {}
    for name, balancing in rows:
        seen.setdefault(name, set()).add(balancing)
    return sorted(name for name, strategies in seen.items() if len(strategies) > 1)
