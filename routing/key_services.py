"""API keys: issue, authenticate, scope, rate-limit, budget and rotate.

Counters live in the Django cache (Redis), so every web replica and worker
counts together; ``cache.add`` + ``cache.incr`` are atomic there.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import hmac
import ipaddress
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.redis import RedisCache
from django.db import close_old_connections, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q, Value
from django.utils import timezone
from django.utils.translation import gettext as _

from openclaw_site.audit import audit

from . import hot
from .key_models import ApiKey, BudgetPeriod
from .versions import VersionToken

PREFIX_MARK = "oc_"
LAST_USED_EVERY = timedelta(seconds=60)  # spare the database a write per request


@dataclass
class KeyRefused(Exception):
    """Why a request is refused: an HTTP status, a stable code and a message for people."""

    status: int
    code: str
    message: str
    retry_after: int | None = None

    def __str__(self) -> str:
        return self.message


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def assign_secret(key: ApiKey) -> str:
    """Give an unsaved key a fresh prefix and secret hash; return the secret (once)."""
    prefix = PREFIX_MARK + secrets.token_urlsafe(6)[:8]
    secret = f"{prefix}.{secrets.token_urlsafe(32)}"
    key.prefix, key.secret_hash = prefix, hash_secret(secret)
    if not key.family:
        key.family = prefix
    return secret


def create_key(name: str, **fields) -> tuple[ApiKey, str]:
    """Create a key from model fields (``allowed_models``, ``rpm_limit``, …); the
    secret is returned here and never again."""
    key = ApiKey(name=name, **fields)
    secret = assign_secret(key)
    key.full_clean()
    with transaction.atomic():
        key.save()
    audit("key.create", target=key.prefix, detail={"name": name})
    return key, secret


# --- authentication -----------------------------------------------------------


def client_ip(remote_addr: str, x_forwarded_for: str | None = None,
              trusted_proxies: Iterable[str] | None = None) -> str:
    """The client's address: ``X-Forwarded-For`` counts only when the peer is a
    trusted proxy, and then the right-most address that is not one."""
    if trusted_proxies is None:
        trusted_proxies = settings.OPENCLAW_TRUSTED_PROXIES
    networks = [ipaddress.ip_network(n, strict=False) for n in trusted_proxies]

    def trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in networks)

    if not x_forwarded_for or not trusted(remote_addr):
        return remote_addr
    current = remote_addr
    for hop in reversed([h.strip() for h in x_forwarded_for.split(",") if h.strip()]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return current  # garbage before a trusted hop: trust nothing further left
        current = hop
        if not trusted(hop):
            return hop
    return current


def _missing() -> KeyRefused:
    return KeyRefused(401, "missing_api_key",
                      _("No API key: send it as “Authorization: Bearer <key>”."))


def _invalid() -> KeyRefused:
    return KeyRefused(401, "invalid_api_key", _("The API key is not valid."))


def _lookup(secret: str) -> ApiKey | None:
    """The key whose secret this is, from the database (None when none)."""
    prefix = secret.split(".", 1)[0]
    key = ApiKey.objects.filter(prefix=prefix).first() if "." in secret else None
    if key is None or not hmac.compare_digest(key.secret_hash, hash_secret(secret)):
        return None
    return key


def authenticate(secret: str | None, client_addr: str) -> ApiKey:
    """The key a request presents, or ``KeyRefused`` (401 unknown/expired/revoked/
    rotated out, 403 from a network the key does not allow)."""
    if not secret:
        raise _missing()
    key = _lookup(secret)
    if key is None:
        raise _invalid()
    _check_valid(key, client_addr)
    _touch(key)
    return key


def _check_valid(key: ApiKey, client_addr: str) -> None:
    now = timezone.now()
    if key.revoked_at is not None:
        raise KeyRefused(401, "revoked_api_key", _("This API key has been revoked."))
    if key.expires_at is not None and key.expires_at <= now:
        raise KeyRefused(401, "expired_api_key", _("This API key has expired."))
    if key.grace_until is not None and key.grace_until <= now:
        raise KeyRefused(401, "rotated_api_key",
                         _("This API key was rotated and its grace period is over; "
                           "use its successor."))
    _check_network(key, client_addr)


def _touch(key: ApiKey) -> None:
    """Note the key's use, at most once a minute (spares the database a write per request)."""
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_EVERY:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now


def _check_network(key: ApiKey, client_addr: str) -> None:
    if not key.allowed_cidrs:
        return
    try:
        ip = ipaddress.ip_address(client_addr)
    except ValueError:
        ip = None
    if ip is None or not any(ip in ipaddress.ip_network(c, strict=False)
                             for c in key.allowed_cidrs):
        raise KeyRefused(403, "ip_not_allowed",
                         _("This API key may not be used from %(addr)s.")
                         % {"addr": client_addr})


def check_scope(key: ApiKey, model: str) -> None:
    if key.allowed_models and model not in key.allowed_models:
        raise KeyRefused(403, "model_not_allowed",
                         _("This API key may not use the model “%(model)s”.")
                         % {"model": model})


# --- limits -------------------------------------------------------------------


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


_shared = None
_shared_lock = threading.Lock()


def counter_cache():
    """A process-wide instance of the default cache for the counters.

    ``django.core.cache.cache`` is per async context, so under ASGI every request
    gets a new backend and, with Redis, a new connection pool and socket; this one
    keeps its pool (redis-py's is thread-safe) for the life of the process."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = caches.create_connection(DEFAULT_CACHE_ALIAS)
    return _shared


def _redis(store, name: str):
    """(redis client, full key) when the cache is Django's Redis backend, else None."""
    if not isinstance(store, RedisCache):
        return None
    full = store.make_and_validate_key(name)
    return store._cache.get_client(full, write=True), full


def _incr(name: str, amount: int, ttl: int) -> int:
    store = counter_cache()
    store.add(name, 0, ttl + 5)
    try:
        return store.incr(name, amount)
    except ValueError:  # expired between add and incr
        store.add(name, 0, ttl + 5)
        return store.incr(name, amount)


def _count(increments: list[tuple[str, int, int]], reads: list[str]) -> list[int]:
    """Add ``(name, amount, ttl)`` to counters (created with the ttl when missing) and
    read others, in one Redis round trip (MULTI/EXEC); the new and read values in order.
    Other cache backends fall back to one call each."""
    store = counter_cache()
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
class _LimitCheck:
    """The counters one request touches (a +1 on the minute's request counter, reads of
    the minute's tokens and the period's budget) and how long their windows have left."""

    increments: list[tuple[str, int, int]]
    reads: list[str]
    minute_left: int
    budget_left: int = 0


def _limit_check(key: ApiKey) -> _LimitCheck | None:
    if not (key.rpm_limit or key.tpm_limit or key.token_budget):
        return None
    now = timezone.now()
    window, minute_left = _minute_window(now)
    check = _LimitCheck([(_counter(key, "rpm", window), 1, 60)] if key.rpm_limit else [], [],
                        minute_left)
    if key.tpm_limit:
        check.reads.append(_counter(key, "tpm", window))
    if key.token_budget:
        label, check.budget_left = period_window(key.budget_period, now)
        check.reads.append(_counter(key, "budget", label))
    return check


def _judge(key: ApiKey, check: _LimitCheck, counts: list[int], tokens: int) -> None:
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
    check = _limit_check(key)
    if check is not None:
        _judge(key, check, _count(check.increments, check.reads), tokens)


def _usage_increments(key: ApiKey, tokens: int) -> list[tuple[str, int, int]]:
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
    increments = _usage_increments(key, tokens)
    if increments:
        _count(increments, [])


# --- the hot path: a per-process copy of the keys, checked from the event loop -------
#
# ``/v1`` authenticates every request. Reading the key from the database would cost a
# query and a hop to a thread each time; instead each process keeps the keys it has
# seen (by secret hash) and a version token in the cache says when any key changed
# (saved, deleted, revoked, rotated — in any process), exactly as the routing rules do.
# The token is read in the same Redis round trip that counts the request against the
# key's limits, so checking it costs nothing.

KEYS_VERSION_KEY = "routing:keys:version"


@dataclass
class _KeyCopies:
    version: str | None = None
    by_hash: dict[str, ApiKey] = field(default_factory=dict)


_copies = _KeyCopies()


KEYS_TOKEN = VersionToken(KEYS_VERSION_KEY)
keys_version = KEYS_TOKEN.current
# Invalidate every process's key copies once the current transaction commits
# (post_save/post_delete receiver; call it after a bulk ``.update()`` of keys).
keys_changed = KEYS_TOKEN.changed


def _load_copy(secret: str, digest: str) -> ApiKey | None:
    """Read the key from the database into this process's copies (the version is read
    first, so a change racing with the read leaves the copy stale-marked, not stale)."""
    global _copies
    close_old_connections()
    version = keys_version()
    if _copies.version != version:
        _copies = _KeyCopies(version)
    key = _lookup(secret)
    if key is not None:
        _copies.by_hash[digest] = key
    return key


async def admit(secret: str | None, client_addr: str, model: str | None,
                tokens: int) -> ApiKey:
    """``authenticate`` + ``check_scope`` + ``check_limits`` for the event loop: the key
    from this process's copy, its validity checked in Python, its counters and the keys'
    version token in one Redis round trip. A stale copy is reloaded (a thread hop, once
    per change) and judged again against the counts already taken."""
    if not secret:
        raise _missing()
    if not hot.available():
        return await sync_to_async(_admit_sync)(secret, client_addr, model, tokens)
    digest = hash_secret(secret)
    copies = _copies
    key = copies.by_hash.get(digest)
    if key is None:
        key = await sync_to_async(_load_copy)(secret, digest)
        if key is None:
            raise _invalid()
        copies = _copies
    check = _limit_check(key)
    counts, version = await hot.count_with(
        check.increments if check else [], check.reads if check else [], KEYS_VERSION_KEY)
    if version != copies.version:  # a key changed somewhere since this copy was taken
        key = await sync_to_async(_load_copy)(secret, digest)
        if key is None:
            raise _invalid()
        fresh = _limit_check(key)
        if fresh is None or check is None or (fresh.increments, fresh.reads) != (
                check.increments, check.reads):  # its limits changed: count by the new ones
            counts = await hot.count(fresh.increments, fresh.reads) if fresh else []
        check = fresh
    _check_valid(key, client_addr)
    if model is not None:
        check_scope(key, model)
    if check is not None:
        _judge(key, check, counts, tokens)
    if key.last_used_at is None or timezone.now() - key.last_used_at > LAST_USED_EVERY:
        await sync_to_async(_touch)(key)
    return key


def _admit_sync(secret: str, client_addr: str, model: str | None, tokens: int) -> ApiKey:
    key = authenticate(secret, client_addr)
    if model is not None:
        check_scope(key, model)
    check_limits(key, tokens)
    return key


def record_usage_soon(key: ApiKey, tokens: int) -> None:
    """``record_usage`` from the event loop, in the background: the answer does not wait,
    and the additions of requests ending together share one Redis round trip."""
    increments = _usage_increments(key, tokens)
    if not increments:
        return
    if hot.available():
        hot.add_soon(increments)
    else:
        hot.keep(asyncio.ensure_future(sync_to_async(_count)(increments, [])))


# --- rotation and revocation --------------------------------------------------

COPIED_FIELDS = ("name", "family", "owner_id", "allowed_models", "allowed_cidrs", "rpm_limit",
                 "tpm_limit", "token_budget", "budget_period", "expires_at", "rotation_hours")


def rotate_key(key: ApiKey, grace_hours: float | None = None) -> tuple[ApiKey, str]:
    """Issue ``key``'s successor with the same settings; ``key`` keeps working for
    ``grace_hours`` (default ``OPENCLAW_KEY_ROTATION_GRACE_HOURS``), then is refused."""
    if grace_hours is None:
        grace_hours = settings.OPENCLAW_KEY_ROTATION_GRACE_HOURS
    with transaction.atomic():
        old = ApiKey.objects.select_for_update().get(pk=key.pk)
        if old.revoked_at is not None or old.grace_until is not None:
            raise KeyRefused(409, "not_rotatable",
                             _("Key %(prefix)s is revoked or already rotated.")
                             % {"prefix": old.prefix})
        new = ApiKey(rotated_from=old, **{f: getattr(old, f) for f in COPIED_FIELDS})
        secret = assign_secret(new)
        new.save()
        old.grace_until = timezone.now() + timedelta(hours=grace_hours)
        old.successor_secret = secret  # for a rotation nobody watched: see claim_successor
        old.save(update_fields=["grace_until", "successor_secret"])
    key.grace_until = old.grace_until
    audit("key.rotate", target=old.prefix, detail={"successor": new.prefix,
                                                   "grace_until": old.grace_until.isoformat()})
    return new, secret


def claim_successor(key: ApiKey) -> tuple[ApiKey, str]:
    """The successor of a rotated ``key`` and its secret, handed over once.

    Automatic rotation happens with nobody watching; the holder of the old key,
    still valid during its grace period, fetches the new secret with it.
    """
    with transaction.atomic():
        old = ApiKey.objects.select_for_update().get(pk=key.pk)
        successor = old.successors.order_by("-created_at").first()
        if old.grace_until is None or successor is None or not old.successor_secret:
            raise KeyRefused(404, "no_successor",
                             _("This key has no successor to hand over (not rotated, or "
                               "its successor's secret was already fetched)."))
        secret, old.successor_secret = old.successor_secret, ""
        old.save(update_fields=["successor_secret"])
    return successor, secret


def revoke_key(key: ApiKey) -> None:
    with transaction.atomic():
        ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now())
        keys_changed()  # .update() sends no signal: invalidate the processes' key copies
    key.refresh_from_db(fields=["revoked_at"])
    audit("key.revoke", target=key.prefix)


def due_for_rotation(now: datetime | None = None):
    now = now or timezone.now()
    return (ApiKey.objects
            .filter(rotation_hours__gt=0, revoked_at__isnull=True, grace_until__isnull=True)
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
            .alias(due_at=ExpressionWrapper(
                F("created_at") + F("rotation_hours") * Value(timedelta(hours=1)),
                output_field=DateTimeField()))
            .filter(due_at__lte=now))


def rotate_due_keys() -> list[str]:
    """Rotate every key whose ``rotation_hours`` have passed; the prefixes of the
    successors. (Beat runs it every few minutes.)"""
    issued = []
    for key in due_for_rotation():
        try:
            new, _secret = rotate_key(key)
        except KeyRefused:  # rotated by hand meanwhile
            continue
        issued.append(new.prefix)
    return issued
