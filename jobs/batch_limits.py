"""Per-model concurrency for batch lines, shared by every worker.

Each line in flight holds a lease in a Redis sorted set per model (member: a random
token, score: when it was last renewed). A lease is taken only while fewer than the
model's limit are live; leases not renewed for ``LEASE_S`` seconds are dropped, so a
worker killed mid-chunk gives its slots back by itself. The limit is
``OPENCLAW_BATCH_CONCURRENCY`` when set, else the sum of ``max_batch`` over the
model's enabled instances (what they take at once), else ``DEFAULT_LIMIT``.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Sum

from routing.models import ModelEndpoint

LEASE_S = 10  # a dead worker's slots are free again after this
RENEW_S = 3
DEFAULT_LIMIT = 8
LIMIT_CACHE_S = 5.0
POLL_S = 0.02

_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
  return 1
end
return 0
"""

_client: redis.Redis | None = None
_script: Any = None
_lock = threading.Lock()
_limits: dict[str, tuple[float, int]] = {}


def _redis() -> tuple[redis.Redis, Any]:
    global _client, _script
    if _client is None:
        with _lock:
            if _client is None:
                client = redis.Redis.from_url(settings.CACHE_LOCATION)
                _script, _client = client.register_script(_ACQUIRE), client
    return _client, _script


def model_limit(model: str) -> int:
    """How many lines of ``model`` may run at once over all workers (kept 5 s)."""
    now = time.monotonic()
    cached = _limits.get(model)
    if cached and cached[0] > now:
        return cached[1]
    limit = settings.OPENCLAW_BATCH_CONCURRENCY
    if not limit:
        limit = (ModelEndpoint.objects.filter(name=model, enabled=True)
                 .aggregate(n=Sum("max_batch"))["n"]) or DEFAULT_LIMIT
    _limits[model] = (now + LIMIT_CACHE_S, limit)
    return limit


def _key(model: str) -> str:
    return f"openclaw:batch:slots:{model}"


class ModelSlots:
    """The leases one chunk holds; renewed in the background while it runs."""

    def __init__(self) -> None:
        self._held: dict[str, str] = {}  # token -> redis key
        # At most `limit` of this chunk's lines wait on Redis for one model.
        self._local: dict[str, asyncio.Semaphore] = {}
        self._renewer: asyncio.Task | None = None

    async def __aenter__(self) -> ModelSlots:
        self._renewer = asyncio.create_task(self._renew())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._renewer:
            self._renewer.cancel()
        if self._held:
            client, _script = _redis()
            with client.pipeline(transaction=False) as pipe:
                for token, key in self._held.items():
                    pipe.zrem(key, token)
                pipe.execute()
            self._held.clear()

    @asynccontextmanager
    async def hold(self, model: str):
        """Wait for a free slot of ``model``, hold it inside the block."""
        limit = await sync_to_async(model_limit)(model)
        local = self._local.setdefault(model, asyncio.Semaphore(limit))
        async with local:
            key, token = _key(model), uuid.uuid4().hex
            client, script = _redis()
            while not script(keys=[key], args=[time.time(), LEASE_S, limit, token]):
                await asyncio.sleep(POLL_S * (1 + random.random()))
            self._held[token] = key
            try:
                yield
            finally:
                self._held.pop(token, None)
                client.zrem(key, token)

    async def _renew(self) -> None:
        client, _script = _redis()
        while True:
            await asyncio.sleep(RENEW_S)
            if self._held:
                now = time.time()
                with client.pipeline(transaction=False) as pipe:
                    for token, key in list(self._held.items()):
                        pipe.zadd(key, {token: now}, xx=True)
                    pipe.execute()
