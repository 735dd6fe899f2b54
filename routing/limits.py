"""Limits — of an API key (requests and tokens per minute, a token budget per day, week
or month) and of a signed-in user (``routing.quotas``: requests and tokens per minute,
hour or day, a budget) — as counters in Redis, so every web replica and worker counts
together.

An admission checks and counts in one step, inside Redis (``ADMIT``, a Lua script run
whole, so no other client sees it half done): each counter of the principal's limits
is read; if every one has room for the request — one request, its prompt's tokens —
each is added to (one request; the prompt's tokens plus what the request may answer,
``max_tokens``, reserved), else nothing is added and the first limit without room is
named. Twenty requests at once on an rpm-5 key: exactly five pass. When the request
ends, its reservation is settled with the real token count (``Counted.settlement``),
so requests running together overshoot a token limit by at most one reservation's
unused part. The script's call also reads version tokens (``core.snapshot``): the
``/v1`` path takes its per-process copies' tokens in the same round trip.

While Redis is away the same judgement is made in this process (``admit_locally``, on
``core.outage.LOCAL``: each counter from the value this process last read), and what
it counted is added to Redis when it returns.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.cache.backends.redis import RedisCache
from django.utils import timezone
from django.utils.translation import gettext as _
from redis.exceptions import NoScriptError

from core import shared_state
from core.cache import process_cache
from core.outage import LOCAL, OUTAGE, UNAVAILABLE
from core.shared_state import Script

from .key_models import ApiKey, BudgetPeriod
from .keys import KeyRefused

REQUESTS, TOKENS, BUDGET = "requests", "tokens", "budget"
TOKEN_KINDS = (TOKENS, BUDGET)
TTL_SLACK = 5  # a counter outlives its window by this much (clock skew between hosts)

ADMIT = Script("""
-- KEYS: n_read keys to read (version tokens), then one counter per limit.
-- ARGV: n_read, then per counter: ceiling, amount that must fit, amount added, ttl.
-- Reply: {read values..., verdict, counter values...}: verdict 0 admits (the values
-- after adding), j > 0 refuses on counter j (the values as they were: what was added
-- is taken back before anyone else can see it).
local n_read = tonumber(ARGV[1])
local reply = {}
for i = 1, n_read do reply[i] = redis.call('GET', KEYS[i]) end
local counters = #KEYS - n_read
local values, verdict = {}, 0
for j = 1, counters do
  local at = 2 + (j - 1) * 4
  local name, add = KEYS[n_read + j], tonumber(ARGV[at + 2])
  local value = redis.call('INCRBY', name, add)
  if value == add then redis.call('EXPIRE', name, ARGV[at + 3]) end  -- a new window
  values[j] = value
  if verdict == 0 and value - add + tonumber(ARGV[at + 1]) > tonumber(ARGV[at]) then
    verdict = j
  end
end
if verdict > 0 then
  for j = 1, counters do
    values[j] = redis.call('DECRBY', KEYS[n_read + j], ARGV[2 + (j - 1) * 4 + 2])
  end
end
reply[n_read + 1] = verdict
for j = 1, counters do reply[n_read + 1 + j] = values[j] end
return reply
""")


# --- windows ------------------------------------------------------------------------------


def period_window(period: str, now: datetime) -> tuple[str, int]:
    """(label, seconds left) of the UTC minute, hour, day, ISO week or month that ``now``
    is in."""
    now = now.astimezone(UTC)
    if period in ("minute", "hour"):
        size = 60 if period == "minute" else 3600
        first = int(now.timestamp()) // size * size
        return str(first), max(1, first + size - int(now.timestamp()))
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


PERIOD_SECONDS = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400,
                  "month": 30 * 86400}


# --- limits -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """One ceiling of a principal: ``kind`` (requests, tokens, budget) per ``period``,
    counted under ``counter`` plus the window's label."""

    kind: str
    ceiling: int
    period: str
    counter: str

    @property
    def rate(self) -> float:
        """Per second, to tell the more generous of two limits of one kind."""
        return self.ceiling / PERIOD_SECONDS[self.period]


def key_limits(key: ApiKey) -> tuple[Limit, ...]:
    """An API key's limits, counted per key family (a rotation keeps the counts); kept
    on the key object, which this process's copy of the keys holds between requests."""
    cached = key.__dict__.get("_limits")
    if cached is not None:
        return cached
    base = f"apikey:{key.family}"
    limits = []
    if key.rpm_limit:
        limits.append(Limit(REQUESTS, key.rpm_limit, "minute", f"{base}:rpm"))
    if key.tpm_limit:
        limits.append(Limit(TOKENS, key.tpm_limit, "minute", f"{base}:tpm"))
    if key.token_budget:
        limits.append(Limit(BUDGET, key.token_budget, key.budget_period, f"{base}:budget"))
    key.__dict__["_limits"] = found = tuple(limits)
    return found


@dataclass
class Counted:
    """The counters of one admission: their names in the current windows, the seconds
    left in each, what was added and what they read after. ``need`` is the request's
    prompt estimate; ``outstanding`` the tokens reserved and not yet settled."""

    limits: tuple[Limit, ...]
    names: list[str]
    ttls: list[int]
    added: list[int]
    values: list[int] = field(default_factory=list)
    outstanding: int = 0
    need: int = 0

    def settlement(self, tokens: int) -> list[tuple[str, int, int]]:
        """Increments that turn the reservation into ``tokens`` really used (the first
        call; later calls add their tokens: one admission may cover several calls)."""
        delta, self.outstanding = tokens - self.outstanding, 0
        if not delta:
            return []
        return [(name, delta, ttl) for limit, name, ttl in zip(
            self.limits, self.names, self.ttls, strict=True) if limit.kind in TOKEN_KINDS]

    def release(self) -> list[tuple[str, int, int]]:
        """Increments that take back everything this admission added (refused after it)."""
        self.outstanding = 0
        return [(name, -added, ttl) for name, added, ttl in zip(
            self.names, self.added, self.ttls, strict=True) if added]

    def apply(self, increments: list[tuple[str, int, int]], values: list[int]) -> None:
        """Note the counters' values after ``increments`` (their replies, in order)."""
        after = dict(zip((name for name, _amount, _ttl in increments), values, strict=True))
        self.values = [after.get(name, value) for name, value in zip(
            self.names, self.values, strict=True)]


def plan(limits: tuple[Limit, ...], need: int, reserve: int,
         now: datetime | None = None) -> tuple[Counted, list[Any]]:
    """The counters of one admission and the script's per-counter arguments: one request,
    or ``need`` tokens that must fit and ``need + reserve`` added."""
    now = now or timezone.now()
    counted = Counted(limits, [], [], [], outstanding=need + reserve, need=need)
    args: list[Any] = []
    for limit in limits:
        label, left = period_window(limit.period, now)
        fit, add = (1, 1) if limit.kind == REQUESTS else (need, need + reserve)
        counted.names.append(f"{limit.counter}:{label}")
        counted.ttls.append(left)
        counted.added.append(add)
        args += [limit.ceiling, fit, add, left + TTL_SLACK]
    if not any(limit.kind in TOKEN_KINDS for limit in limits):
        counted.outstanding = 0
    return counted, args


def admit_locally(counted: Counted, args: list[Any]) -> tuple[int, list[int]]:
    """``ADMIT``'s verdict and values from this process's counters (Redis is away);
    ``args`` as ``plan`` made them."""
    counters = [(name, int(args[4 * j]), int(args[4 * j + 1]), int(args[4 * j + 2]), ttl)
                for j, (name, ttl) in enumerate(zip(counted.names, counted.ttls, strict=True))]
    return LOCAL.admit(counters)


def judge(counted: Counted, verdict: int, values: list[Any]) -> None:
    """Keep the script's values; ``KeyRefused`` (429) when it refused."""
    counted.values = [int(v) for v in values]
    if verdict:
        counted.added = [0] * len(counted.names)
        counted.outstanding = 0
        index = int(verdict) - 1
        quota = quota_state(counted)
        if quota is not None and quota["kind"] == counted.limits[index].kind:
            quota["spent"] = True  # what is left is less than this request needs
        raise refusal(counted.limits[index], counted.ttls[index], quota)


def refusal(limit: Limit, seconds: int, quota: dict[str, Any] | None = None) -> KeyRefused:
    """The 429 of a spent limit, with when it renews."""
    values = {"limit": limit.ceiling, "seconds": seconds, "period": limit.period,
              "budget": limit.ceiling}
    if limit.kind == REQUESTS:
        code = "rate_limit_exceeded"
        message = (_("Rate limit of %(limit)d requests per minute reached; retry in "
                     "%(seconds)d s.") if limit.period == "minute" else
                   _("Limit of %(limit)d requests per %(period)s reached; retry in "
                     "%(seconds)d s.")) % values
    elif limit.kind == TOKENS:
        code = "token_rate_limit_exceeded"
        message = (_("Token limit of %(limit)d tokens per minute reached; retry in "
                     "%(seconds)d s.") if limit.period == "minute" else
                   _("Limit of %(limit)d tokens per %(period)s reached; retry in "
                     "%(seconds)d s.")) % values
    else:
        code = "budget_exhausted"
        message = _("Token budget of %(budget)d per %(period)s is spent; it renews in "
                    "%(seconds)d s.") % values
    return KeyRefused(429, code, message, retry_after=seconds, quota=quota)


def quota_state(counted: Counted) -> dict[str, Any] | None:
    """What the studio's quota bar shows: the budget, else the token limit, else the
    request limit — used, ceiling, period, seconds until it renews."""
    for kind in (BUDGET, TOKENS, REQUESTS):
        for index, limit in enumerate(counted.limits):
            if limit.kind == kind and index < len(counted.values):
                used = max(0, counted.values[index])
                return {"kind": kind, "used": used, "limit": limit.ceiling,
                        "period": limit.period, "resets_in": counted.ttls[index],
                        "spent": used >= limit.ceiling}
    return None


# --- counting from a thread (workers, admin, sync views) --------------------------------


def _redis(store: Any, name: str) -> tuple[Any, str] | None:
    """(redis client, full key) when the cache is Django's Redis backend, else None."""
    if not isinstance(store, RedisCache):
        return None
    full = store.make_and_validate_key(name)
    # _cache: RedisCache's client, private and so not in the stubs (no public accessor).
    return store._cache.get_client(full, write=True), full  # type: ignore[attr-defined]  # private


def reserve(limits: tuple[Limit, ...], need: int, reserve: int = 0) -> Counted:
    """Admit one request against ``limits`` (``ADMIT``, one round trip), or
    ``KeyRefused`` (429) naming the spent limit."""
    counted, args = plan(limits, need, reserve)
    if not limits:
        return counted
    store = process_cache()
    found = _redis(store, counted.names[0])
    if found is None:
        return _reserve_elsewhere(counted, need)
    client = found[0]
    keys = [store.make_and_validate_key(name) for name in counted.names]
    try:
        shared_state.recover_sync()
        try:
            reply = client.evalsha(ADMIT.sha, len(keys), *keys, 0, *args)
        except NoScriptError:
            reply = client.eval(ADMIT.source, len(keys), *keys, 0, *args)
    except UNAVAILABLE as exc:
        OUTAGE.mark_down(exc)
        verdict, values = admit_locally(counted, args)
        judge(counted, verdict, values)
        return counted
    LOCAL.note(counted.names, reply[1:])
    judge(counted, int(reply[0]), reply[1:])
    return counted


def _reserve_elsewhere(counted: Counted, need: int) -> Counted:
    """``reserve`` on a cache that is not Redis: each counter read, then added to (not
    atomic across processes; a deployment's own choice of cache)."""
    store = process_cache()
    values = [int(store.get(name, 0)) for name in counted.names]
    for index, (limit, value) in enumerate(zip(counted.limits, values, strict=True)):
        if value + (1 if limit.kind == REQUESTS else need) > limit.ceiling:
            judge(counted, index + 1, values)
    judge(counted, 0, count(list(zip(counted.names, counted.added, counted.ttls,
                                     strict=True)), []))
    return counted


def _incr(name: str, amount: int, ttl: int) -> int:
    store = process_cache()
    store.add(name, 0, ttl + TTL_SLACK)
    try:
        return store.incr(name, amount)
    except ValueError:  # expired between add and incr
        store.add(name, 0, ttl + TTL_SLACK)
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
    try:
        shared_state.recover_sync()
        with client.pipeline(transaction=True) as pipe:
            for name, amount, ttl in increments:
                full = store.make_and_validate_key(name)
                pipe.set(full, 0, ex=ttl + TTL_SLACK, nx=True)
                pipe.incrby(full, amount)
            for name in reads:
                pipe.get(store.make_and_validate_key(name))
            replies = pipe.execute()
    except UNAVAILABLE as exc:  # Redis away: counted here, added to it when it returns
        OUTAGE.mark_down(exc)
        return LOCAL.add(increments) + LOCAL.read(reads)
    counted = replies[1:2 * len(increments):2]
    read = replies[2 * len(increments):]
    return [int(v) for v in counted] + [int(v) if v is not None else 0 for v in read]


def read(limits: tuple[Limit, ...]) -> Counted:
    """The current values of ``limits``' counters (nothing added): the quota bar."""
    counted, _args = plan(limits, 0, 0)
    counted.outstanding = 0
    counted.added = [0] * len(limits)
    try:
        shared_state.recover_sync()
        values = process_cache().get_many(counted.names) if limits else {}
    except UNAVAILABLE as exc:
        OUTAGE.mark_down(exc)
        counted.values = LOCAL.read(counted.names)
        return counted
    counted.values = [int(values.get(name) or 0) for name in counted.names]
    return counted


def check_limits(key: ApiKey, tokens: int = 0) -> None:
    """Count one request of ``key`` and reserve its ``tokens`` (its prompt), or refuse
    it (429) when the key's rpm, tpm or budget is spent. One Redis round trip."""
    reserve(key_limits(key), tokens)


def record_usage(key: ApiKey, tokens: int) -> None:
    """Add tokens used outside an admission to the key's token counters (one Redis
    round trip)."""
    if tokens <= 0:
        return
    counted, _args = plan(key_limits(key), 0, 0)
    increments = [(name, tokens, ttl) for limit, name, ttl in zip(
        counted.limits, counted.names, counted.ttls, strict=True) if limit.kind in TOKEN_KINDS]
    if increments:
        count(increments, [])
