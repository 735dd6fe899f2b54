"""Django's Redis cache with one connection pool per process and server.

Django keeps a cache object per thread and per asyncio context (``caches`` is an
asgiref ``Local``), and each object opens its own connection pool. Async code calls the
sync cache API through ``sync_to_async`` from many short-lived contexts — every
LangGraph node runs in a task of its own — so each such call opened, used and dropped
a new Redis connection (a connect and a handshake, about 0.3 ms and a socket each).
Here the pools are shared by every cache object of the process: redis-py's pool is
thread-safe, and a forked worker makes its own (redis-py checks the pid).
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

_pools: dict[tuple, Any] = {}
_lock = threading.Lock()


class SharedPoolClient(RedisCacheClient):
    def _get_connection_pool(self, write: bool):
        index = self._get_connection_pool_index(write)
        key = (self._servers[index], self._pool_class,
               tuple(sorted((k, repr(v)) for k, v in self._pool_options.items())))
        pool = _pools.get(key)
        if pool is None:
            with _lock:
                pool = _pools.get(key)
                if pool is None:
                    pool = _pools[key] = self._pool_class.from_url(
                        self._servers[index], **self._pool_options)
        return pool


class SharedPoolRedisCache(RedisCache):
    """``RedisCache`` whose connection pools are the process's (see the module)."""

    @cached_property
    def _cache(self) -> SharedPoolClient:
        return SharedPoolClient(self._servers, **self._options)
