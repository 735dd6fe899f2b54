"""The shared state the ``/v1`` hot path reads, from the event loop, without a thread.

Every cross-process fact a request needs — the routing and key version tokens, a key's
rate counters, the circuits and balancing statistics of the candidate instances — lives
in the Django cache (Redis). The sync cache API would need a hop to a worker thread per
call (about 0.3 ms each under load, and a thread pool to queue on); this module talks to
the same Redis from the event loop instead, one pipelined round trip per question,
reading and writing the exact keys and values Django's ``RedisCache`` does (its
``make_key`` and its serializer: ints raw, everything else pickled), so the admin, the
workers and the sync services keep working on the same data. The round trips go
through ``core.redis_pipeline``, a pipeline-only client far lighter than redis-py's.

When the default cache is not Redis (a custom deployment's choice), ``available()`` is
False and the callers fall back to the sync services through ``sync_to_async``.

When Redis stops answering, a round trip raises ``RedisUnavailable`` (at once, without
trying, until ``core.outage.RETRY_S`` has passed) and counting goes on in this process
(``count``, ``add_soon``: ``core.outage.LOCAL``); the first round trip that succeeds
afterwards is preceded by the reconciliation — what was counted here added to the Redis
counters — and ends the outage (``core.outage``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import logging
import pickle
import weakref
from typing import Any

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS
from django.core.cache.backends.redis import RedisCache

from . import redis_pipeline
from .cache import process_cache
from .outage import LOCAL, OUTAGE, UNAVAILABLE, Increment

logger = logging.getLogger(__name__)


# Version tokens read once per request, in the request's first round trip (the key's
# counters), for the per-process copies consulted later in the same request.
_prefetch: list[str] = []
_seen: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "hot_versions", default=None)


def _cache() -> RedisCache | None:
    store = process_cache()
    return store if isinstance(store, RedisCache) else None


def available() -> bool:
    """Whether the default cache is Redis (the hot path can use it directly)."""
    return _cache() is not None


def full_key(name: str) -> str:
    """The Redis key Django's cache uses for ``name``."""
    store = _cache()
    assert store is not None  # callers reach here only when available()
    return store.make_and_validate_key(name)


def pool() -> redis_pipeline.Pool:
    """The Redis connections of the running event loop to the default cache's server."""
    return redis_pipeline.pool_for(location())


@functools.cache
def location() -> str:
    """The URL of the default cache's Redis (its first server)."""
    found = settings.CACHES[DEFAULT_CACHE_ALIAS]["LOCATION"]
    return found[0] if isinstance(found, list | tuple) else found


async def execute(commands: list[tuple]) -> list[Any]:
    """Raw replies to ``commands``, sent as one pipeline; ``RedisUnavailable`` while
    Redis is away (see the module)."""
    if OUTAGE.down:
        await _recover()
    try:
        return await pool().execute(commands)
    except redis_pipeline.RedisUnavailable as exc:
        OUTAGE.mark_down(exc)
        raise


async def _recover() -> None:
    """After an outage: try Redis again (one caller per retry interval) with the
    counters this process kept as the round trip, then end the outage."""
    if not OUTAGE.may_try():
        raise redis_pipeline.RedisUnavailable("Redis is unavailable (retrying shortly)")
    increments = LOCAL.drain()
    try:
        await pool().execute(_increments(increments) or [("PING",)])
    except redis_pipeline.RedisUnavailable as exc:
        LOCAL.restore(increments)
        OUTAGE.mark_down(exc)
        raise
    OUTAGE.mark_up(len(increments))


def recover_sync() -> None:
    """``_recover`` from a thread, through Django's cache client (``UNAVAILABLE`` when
    Redis is still away, or not to be tried yet); nothing to do when it was not away."""
    if not OUTAGE.down:
        return
    if not OUTAGE.may_try():
        raise redis_pipeline.RedisUnavailable("Redis is unavailable (retrying shortly)")
    increments = LOCAL.drain()
    store = _cache()
    try:
        if store is not None:
            # _cache: RedisCache's client, private (no public accessor).
            client = store._cache.get_client(write=True)  # type: ignore[attr-defined]
            with client.pipeline(transaction=True) as pipe:
                for name, amount, ttl in increments:
                    full = full_key(name)
                    pipe.set(full, 0, ex=ttl + 5, nx=True)
                    pipe.incrby(full, amount)
                pipe.ping()
                pipe.execute()
    except UNAVAILABLE as exc:
        LOCAL.restore(increments)
        OUTAGE.mark_down(exc)
        raise
    OUTAGE.mark_up(len(increments))


def _increments(increments: list[Increment]) -> list[tuple]:
    """Commands adding to counters (created with their ttl when missing), in one
    MULTI/EXEC; none when there is nothing to add."""
    if not increments:
        return []
    commands: list[tuple] = [("MULTI",)]
    for name, amount, ttl in increments:
        full = full_key(name)
        commands += [("SET", full, 0, "EX", ttl + 5, "NX"), ("INCRBY", full, amount)]
    commands.append(("EXEC",))
    return commands


def loads(value: bytes | None) -> Any:
    """A value as Django's ``RedisSerializer`` wrote it."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return pickle.loads(value)


def dumps(value: Any) -> bytes | int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def prefetch(name: str) -> None:
    """Read the version token ``name`` in every request's first round trip (module level:
    a copy keeper registers its token when imported)."""
    if name not in _prefetch:
        _prefetch.append(name)


def prefetched() -> list[str]:
    return list(_prefetch)


def forget() -> None:
    """Start a request with no version tokens read yet."""
    _seen.set(None)


def remember(values: dict[str, Any]) -> None:
    """Keep the values this request read (its context only), with those it read before."""
    _seen.set({**(_seen.get() or {}), **values})


def seen(name: str, default: Any = None) -> Any:
    """The value of ``name`` as this request read it (None when it was missing), or
    ``default`` when the request did not read it."""
    values = _seen.get()
    return values.get(name, default) if values else default


async def get_many(names: list[str]) -> list[Any]:
    """The values of ``names`` (None where missing), in one round trip."""
    if not names:
        return []
    (values,) = await execute([("MGET", *(full_key(n) for n in names))])
    return [loads(v) for v in values]


async def count(increments: list[tuple[str, int, int]], reads: list[str]) -> list[int]:
    """``routing.limits.count`` in the event loop: add ``(name, amount, ttl)`` to
    counters (created with the ttl when missing) and read others, in one MULTI/EXEC.
    While Redis is away, counted in this process (``core.outage.LOCAL``)."""
    try:
        counts, _version = await count_with(increments, reads, None)
    except redis_pipeline.RedisUnavailable:
        return LOCAL.add(increments) + LOCAL.read(reads)
    return counts


async def count_with(increments: list[tuple[str, int, int]], reads: list[str],
                     version_key: str | None) -> tuple[list[int], Any]:
    """``count`` plus the value of ``version_key`` (a version token), in the same trip;
    the ``prefetch`` tokens too, kept for the rest of the request (``seen``)."""
    extra = _prefetch if version_key is not None else []
    commands: list[tuple] = [("MULTI",)]
    commands += [("GET", full_key(name)) for name in extra]
    if version_key is not None:
        commands.append(("GET", full_key(version_key)))
    for name, amount, ttl in increments:
        full = full_key(name)
        commands += [("SET", full, 0, "EX", ttl + 5, "NX"), ("INCRBY", full, amount)]
    commands += [("GET", full_key(name)) for name in reads]
    commands.append(("EXEC",))
    replies = (await execute(commands))[-1]  # EXEC: the list of the queued commands' replies
    if not isinstance(replies, list):
        raise redis_pipeline.RedisUnavailable("the counters' transaction was aborted")
    for reply in replies:
        if isinstance(reply, Exception):
            raise redis_pipeline.RedisReplyError(str(reply))
    if extra:
        remember({name: loads(replies.pop(0)) for name in extra})
    version = loads(replies.pop(0)) if version_key is not None else None
    counted = replies[1:2 * len(increments):2]
    read = replies[2 * len(increments):]
    return [int(v) for v in counted] + [int(v) if v is not None else 0 for v in read], version


class Script:
    """A Lua script: run whole inside Redis, so what it reads and writes no other client
    sees half done (``EVALSHA``; the source is sent once per server, when it lacks it)."""

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # Redis's own name for it


async def evaluate(script: Script, keys: list[str], args: list[Any]) -> Any:
    """The reply of ``script`` run on ``keys`` (full Redis keys) and ``args``, in one
    round trip (two the first time a server has not seen the script)."""
    try:
        (reply,) = await execute([("EVALSHA", script.sha, len(keys), *keys, *args)])
    except redis_pipeline.RedisReplyError as exc:
        if not str(exc).startswith("NOSCRIPT"):
            raise
        (reply,) = await execute([("EVAL", script.source, len(keys), *keys, *args)])
    return reply


class _Coalescer:
    """Counter increments of one event loop waiting to be sent: the requests that end in
    the same loop iteration (many, under load) share one round trip."""

    def __init__(self) -> None:
        self.pending: dict[str, list[int]] = {}  # name -> [amount, ttl]
        self.scheduled = False

    def add(self, increments: list[tuple[str, int, int]]) -> None:
        for name, amount, ttl in increments:
            entry = self.pending.setdefault(name, [0, ttl])
            entry[0] += amount
            entry[1] = max(entry[1], ttl)
        if not self.scheduled:
            self.scheduled = True
            keep(asyncio.ensure_future(self.flush()))

    async def flush(self) -> None:
        await asyncio.sleep(0)  # let the other requests of this iteration add theirs
        batch, self.pending, self.scheduled = self.pending, {}, False
        await count([(name, amount, ttl) for name, (amount, ttl) in batch.items()], [])


_coalescers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_tasks: set[asyncio.Task] = set()  # strong references until they end


def keep(task: asyncio.Task) -> None:
    """Hold a background task until it ends; log its failure."""
    _tasks.add(task)
    task.add_done_callback(_finished)


def _finished(task: asyncio.Task) -> None:
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("background Redis update failed", exc_info=task.exception())


def add_soon(increments: list[tuple[str, int, int]]) -> None:
    """Add to counters in the background, coalesced with the other requests' additions
    of this loop iteration (for usage that only later requests read)."""
    if not increments:
        return
    loop = asyncio.get_running_loop()
    coalescer = _coalescers.get(loop)
    if coalescer is None:
        coalescer = _coalescers[loop] = _Coalescer()
    coalescer.add(increments)
