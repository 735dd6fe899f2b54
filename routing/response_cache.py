"""The response cache: identical temperature-0 chat requests within the TTL are
answered from a cache instead of a model.

Backend (``OPENCLAW_RESPONSE_CACHE``): ``local`` — an LRU of
``OPENCLAW_RESPONSE_CACHE_SIZE`` entries in each web process (embedded mode's
default); ``redis`` — the cache Redis, shared by every replica (distributed mode's
default); ``off``. Entries live ``OPENCLAW_RESPONSE_CACHE_TTL`` seconds.

How ``/v1/chat/completions`` uses it::

    key = response_cache.cache_key(model, chat.messages, params)   # None: not cacheable
    if key and response_cache.enabled_for(api_key) and not response_cache.bypassed(headers):
        cached = await response_cache.aget(key)        # counts the hit or miss
        ...  # hit: answer ``cached`` with ``x-openclaw-cache: hit``
        ...  # miss: call the gateway, answer with ``x-openclaw-cache: miss``, then
        await response_cache.aput(key, body)

A request is cacheable when it is not streamed and its temperature is exactly 0. The
key is a keyed hash (HMAC, ``core.crypto.keyed_digest``) of the model, the messages
and every other parameter, so any difference misses and a guess cannot be checked
against it; in Redis the entries are encrypted. Entries are shared between API keys
(an answer depends only on the request); a key listed in
``OPENCLAW_RESPONSE_CACHE_EXCLUDE_KEYS`` (its prefix or family) never reads nor
writes the cache, nor does a request sent with ``Cache-Control: no-cache``
or ``no-store``. A cache that fails (Redis away) is a miss, never an error.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from core import crypto, metrics, redis_pipeline
from core.outage import OUTAGE

logger = logging.getLogger(__name__)

HEADER = "x-openclaw-cache"
HIT, MISS = "hit", "miss"
KEY_PREFIX = "openclaw:rc:"
# Not part of what the answer depends on (a stream is never cacheable anyway).
IGNORED_PARAMS = frozenset({"stream", "stream_options"})


def cache_key(model: str, messages: list[dict[str, Any]],
              params: Mapping[str, Any]) -> str | None:
    """The cache key of a request, or None when it must not be cached: the cache is
    off, the request streams, or its temperature is not exactly 0 (OpenAI's default
    temperature is 1, so an absent one is not 0)."""
    if settings.OPENCLAW_RESPONSE_CACHE == "off" or params.get("stream"):
        return None
    temperature = params.get("temperature")
    if isinstance(temperature, bool) or temperature != 0:
        return None
    payload = {"model": model, "messages": messages,
               "params": {k: v for k, v in params.items() if k not in IGNORED_PARAMS}}
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                         default=str)
    return KEY_PREFIX + crypto.keyed_digest(encoded.encode(), "response-cache")


def chat_params(request: Any) -> dict[str, Any]:
    """The parameters of a ``ChatRequest`` as ``cache_key`` wants them."""
    params = {"max_tokens": request.max_tokens, "temperature": request.temperature,
              "top_p": request.top_p, "stop": request.stop, "seed": request.seed}
    params.update(request.extra)
    return {k: v for k, v in params.items() if v is not None}


def enabled_for(api_key: Any) -> bool:
    """False for a key whose prefix or family is in ``OPENCLAW_RESPONSE_CACHE_EXCLUDE_KEYS``."""
    excluded = settings.OPENCLAW_RESPONSE_CACHE_EXCLUDE_KEYS
    if not excluded or api_key is None:
        return True
    return api_key.prefix not in excluded and api_key.family not in excluded


def bypassed(headers: Mapping[str, str]) -> bool:
    """The client asked not to be served from (nor stored in) the cache."""
    directives = (headers.get("Cache-Control") or "").lower()
    return "no-cache" in directives or "no-store" in directives


async def aget(key: str) -> dict[str, Any] | None:
    """The cached response for ``key`` (a new object each time), or None; counts the
    look-up as a hit or a miss in ``openclaw_response_cache_lookups_total``."""
    try:
        raw = await _store().get(key)
    except Exception as exc:
        logger.warning("response cache read failed: %s", exc)
        raw = None
    metrics.cache_lookup(raw is not None)
    return json.loads(raw) if raw is not None else None


async def aput(key: str, value: dict[str, Any]) -> None:
    """Keep ``value`` (JSON-serialisable) for the TTL."""
    encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        await _store().set(key, encoded, settings.OPENCLAW_RESPONSE_CACHE_TTL)
    except Exception as exc:
        logger.warning("response cache write failed: %s", exc)


# --- stores ---------------------------------------------------------------------------


class LocalStore:
    """An LRU with a TTL per entry, in this process; safe across threads."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    async def get(self, key: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= now:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    async def set(self, key: str, value: str, ttl: int) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic() + ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class RedisStore:
    """The cache Redis (``CACHE_URL`` / ``REDIS_URL``, embedded: its socket), through the
    event loop's pipeline client (``core.redis_pipeline``). Its own keys
    (``openclaw:rc:…``), not Django's: the JSON text AES-256-GCM encrypted (it outlives
    the request, so it is content at rest), with a TTL. One that no configured key
    opens is a miss."""

    def __init__(self, url: str):
        self.url = url

    async def get(self, key: str) -> str | None:
        if OUTAGE.down:  # the cache Redis is the shared state's: a miss, not a wait
            return None
        (raw,) = await redis_pipeline.pool_for(self.url).execute([("GET", key)])
        if raw is None:
            return None
        try:
            return crypto.decrypt(raw.decode())
        except (crypto.DecryptionError, ValueError):
            return None

    async def set(self, key: str, value: str, ttl: int) -> None:
        if OUTAGE.down:
            return
        await redis_pipeline.pool_for(self.url).execute(
            [("SET", key, crypto.encrypt(value), "EX", ttl)])


_stores: dict[tuple, LocalStore | RedisStore] = {}
_stores_lock = threading.Lock()


def _store() -> LocalStore | RedisStore:
    """The store the settings name (one per configuration, kept for the process)."""
    backend = settings.OPENCLAW_RESPONSE_CACHE
    config = ((backend, settings.CACHE_LOCATION) if backend == "redis"
              else (backend, settings.OPENCLAW_RESPONSE_CACHE_SIZE))
    store = _stores.get(config)
    if store is None:
        with _stores_lock:
            store = _stores.get(config)
            if store is None:
                store = (RedisStore(settings.CACHE_LOCATION) if backend == "redis"
                         else LocalStore(settings.OPENCLAW_RESPONSE_CACHE_SIZE))
                _stores[config] = store
    return store


def clear_local() -> None:
    """Forget this process's local entries (tests)."""
    with _stores_lock:
        for config in [c for c in _stores if c[0] == "local"]:
            del _stores[config]
