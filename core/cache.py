"""Redis, the sync way: Django's cache with one connection pool per process and server.

OpenClaw talks to Redis in two ways, each where it was measured to fit:

- here, Django's cache API (``django.core.cache.cache``, ``process_cache()``): the
  services, the admin, the workers — everything that runs in a thread;
- ``core.redis_pipeline`` (with ``core.shared_state`` on top): the ``/v1`` and studio
  hot paths, from the event loop, one pipelined round trip per question.

Both read and write the same keys in the same encoding.

Django keeps a cache object per thread and per asyncio context (``caches`` is an
asgiref ``Local``), and each object opens its own connection pool. Async code calls the
sync cache API through ``sync_to_async`` from many short-lived contexts — every
LangGraph node runs in a task of its own — so each such call opened, used and dropped
a new Redis connection (a connect and a handshake, about 0.3 ms and a socket each).
Here the pools are shared by every cache object of the process: redis-py's pool is
thread-safe, and a forked worker makes its own (redis-py checks the pid).

A pool reconnects by itself after Redis restarts (redis-py drops a failed connection and
opens a new one on the next command); its connections time out (``SOCKET_TIMEOUTS``) so
that a Redis that stops answering fails a call instead of hanging it.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Any

from django.core.cache import DEFAULT_CACHE_ALIAS, BaseCache, caches
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.connection import ConnectionPool

_pools: dict[tuple, Any] = {}
_lock = threading.Lock()
# Unless the cache's OPTIONS say otherwise: seconds to connect, and to wait for a reply.
SOCKET_TIMEOUTS = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}


class SharedPoolClient(RedisCacheClient):
    # RedisCacheClient's private pool settings (set in its __init__), not in the stubs.
    _servers: list[str]
    _pool_class: type[ConnectionPool]
    _pool_options: dict[str, Any]

    def _get_connection_pool(self, write: bool):
        index = self._get_connection_pool_index(write)  # type: ignore[attr-defined]  # private too
        key = (self._servers[index], self._pool_class,
               tuple(sorted((k, repr(v)) for k, v in self._pool_options.items())))
        pool = _pools.get(key)
        if pool is None:
            with _lock:
                pool = _pools.get(key)
                if pool is None:
                    pool = _pools[key] = self._pool_class.from_url(
                        self._servers[index], **{**SOCKET_TIMEOUTS, **self._pool_options})
        return pool


class SharedPoolRedisCache(RedisCache):
    """``RedisCache`` whose connection pools are the process's (see the module)."""

    # RedisCache's private settings (set in its __init__), not in the stubs.
    _servers: list[str]
    _options: dict[str, Any]

    @cached_property
    def _cache(self) -> SharedPoolClient:
        return SharedPoolClient(self._servers, **self._options)


_process_cache: BaseCache | None = None


def process_cache() -> BaseCache:
    """One instance of the default cache for the whole process (``caches["default"]``
    is one per thread and per asyncio context): for code that needs the backend object
    itself — its Redis client for a pipeline, its key function."""
    global _process_cache
    if _process_cache is None:
        with _lock:
            if _process_cache is None:
                _process_cache = caches.create_connection(DEFAULT_CACHE_ALIAS)
    return _process_cache
