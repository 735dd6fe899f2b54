"""The limits of an API key — requests and tokens per minute, a token budget per day,
week or month — counted in the Django cache (Redis), so every web replica and worker
counts together: one MULTI/EXEC round trip per request (``count``), or from the event
loop ``core.shared_state.count_with`` on the same keys.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.cache.backends.redis import RedisCache
from django.utils import timezone
from django.utils.translation import gettext as _

from core.cache import process_cache

from .key_models import ApiKey, BudgetPeriod
from .keys import KeyRefused


def _minute_window(now: datetime) -> tuple[str, int]:
    start = int(now.timestamp()) // 60 * 60
    return str(start), start + 60 - int(now.timestamp())


def period_window(period: str, now: datetime) -> tuple[str, int]:
    """(label, seconds left) of the UTC day, ISO week or month that ``now`` is in."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == BudgetPeriod.DAY:
        start, end = day, day + timedelta(days=1)
    elif period == BudgetPeriod.WEEK:
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = start + timedelta(days=calendar.monthrange(start.year, start.month)[1])
    return start.date().isoformat(), max(1, int((end - now).total_seconds()))


def _counter(key: ApiKey, kind: str, window: str) -> str:
    return f"apikey:{key.family}:{kind}:{window}"


def _redis(store: Any, name: str) -> tuple[Any, str] | None:
    """(redis client, full key) when the cache is Django's Redis backend, else None."""
    if not isinstance(store, RedisCache):
        return None
    full = store.make_and_validate_key(name)
    # _cache: RedisCache's client, private and so not in the stubs (no public accessor).
    return store._cache.get_client(full, write=True), full  # type: ignore[attr-defined]  # private


def _incr(name: str, amount: int, ttl: int) -> int:
    store = process_cache()
    store.add(name, 0, ttl + 5)
    try:
        return store.incr(name, amount)
    except ValueError:  # expired between add and incr
        store.add(name, 0, ttl + 5)
        return store.incr(name, amount)


def count(increments: list[tuple[str, int, int]], reads: list[str]) -> list[int]:
    """Add ``(name, amount, ttl)`` to counters (created with the ttl when missing) and
    read others, in one Redis round trip (MULTI/EXEC); the new and read values in order.
    Other cache backends fall back to one call each."""
    store = process_cache()
    names = [name for name, _amount, _ttl in increments] + reads
    if not names:
        return []
    first = _redis(store, names[0])
    if first is None:
        return ([_incr(name, amount, ttl) for name, amount, ttl in increments]
                + [store.get(name, 0) for name in reads])
    client = first[0]
    with client.pipeline(transaction=True) as pipe:
        for name, amount, ttl in increments:
            full = store.make_and_validate_key(name)
            pipe.set(full, 0, ex=ttl + 5, nx=True)
            pipe.incrby(full, amount)
        for name in reads:
            pipe.get(store.make_and_validate_key(name))
        replies = pipe.execute()
    counted = replies[1:2 * len(increments):2]
    read = replies[2 * len(increments):]
    return [int(v) for v in counted] + [int(v) if v is not None else 0 for v in read]


@dataclass
class LimitCheck:
    """The counters one request touches (a +1 on the minute's request counter, reads of
    the minute's tokens and the period's budget) and how long their windows have left."""

    increments: list[tuple[str, int, int]]
    reads: list[str]
    minute_left: int
    budget_left: int = 0


def limit_check(key: ApiKey) -> LimitCheck | None:
    if not (key.rpm_limit or key.tpm_limit or key.token_budget):
        return None
    now = timezone.now()
    window, minute_left = _minute_window(now)
    check = LimitCheck([(_counter(key, "rpm", window), 1, 60)] if key.rpm_limit else [], [],
                        minute_left)
    if key.tpm_limit:
        check.reads.append(_counter(key, "tpm", window))
    if key.token_budget:
        label, check.budget_left = period_window(key.budget_period, now)
        check.reads.append(_counter(key, "budget", label))
    return check


def judge(key: ApiKey, check: LimitCheck, counts: list[int], tokens: int) -> None:
    """Refuse (429) when the counts show the key's rpm, tpm or budget spent."""
    values, minute_left = iter(counts), check.minute_left
    if key.rpm_limit:
        count = next(values)
        if count > key.rpm_limit:
            raise KeyRefused(429, "rate_limit_exceeded",
                             _("Rate limit of %(limit)d requests per minute reached; retry "
                               "in %(seconds)d s.") % {"limit": key.rpm_limit,
                                                       "seconds": minute_left},
                             retry_after=minute_left)
    if key.tpm_limit:
        used = next(values)
        if used + tokens > key.tpm_limit:
            raise KeyRefused(429, "token_rate_limit_exceeded",
                             _("Token limit of %(limit)d tokens per minute reached; retry "
                               "in %(seconds)d s.") % {"limit": key.tpm_limit,
                                                       "seconds": minute_left},
                             retry_after=minute_left)
    if key.token_budget:
        used = next(values)
        if used + tokens > key.token_budget:
            raise KeyRefused(429, "budget_exhausted",
                             _("Token budget of %(budget)d per %(period)s is spent; it "
                               "renews in %(seconds)d s.")
                             % {"budget": key.token_budget, "period": key.budget_period,
                                "seconds": check.budget_left},
                             retry_after=check.budget_left)


def check_limits(key: ApiKey, tokens: int = 0) -> None:
    """Count one request and refuse it (429) when the key's rpm, tpm or budget is
    spent. ``tokens`` is the request's estimate (its prompt); the real usage is
    added by ``record_usage``. One Redis round trip."""
    check = limit_check(key)
    if check is not None:
        judge(key, check, count(check.increments, check.reads), tokens)


def usage_increments(key: ApiKey, tokens: int) -> list[tuple[str, int, int]]:
    if tokens <= 0:
        return []
    now = timezone.now()
    increments = []
    if key.tpm_limit:
        window, _left = _minute_window(now)
        increments.append((_counter(key, "tpm", window), tokens, 60))
    if key.token_budget:
        label, left = period_window(key.budget_period, now)
        increments.append((_counter(key, "budget", label), tokens, left))
    return increments


def record_usage(key: ApiKey, tokens: int) -> None:
    """Add a finished request's tokens to the key's per-minute and budget counters
    (one Redis round trip)."""
    increments = usage_increments(key, tokens)
    if increments:
        count(increments, [])


