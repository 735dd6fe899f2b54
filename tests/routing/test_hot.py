"""The hot path's Redis access (``routing.hot``) against the embedded Redis: values
Django's cache wrote read back as Django would, and a burst of concurrent requests
larger than the connection pool waits for connections instead of failing."""

from __future__ import annotations

import asyncio

from django.core.cache import cache

from routing import hot


async def test_reads_what_djangos_cache_wrote():
    cache.set("hot:test:int", 7)
    cache.set("hot:test:text", "a-version-token")

    assert await hot.get_many(["hot:test:int", "hot:test:text", "hot:test:none"]) == [
        7, "a-version-token", None]


async def test_counters_are_created_with_a_ttl_and_counted_across_calls():
    cache.delete("hot:test:counter")

    first = await hot.count([("hot:test:counter", 2, 60)], [])
    second, version = await hot.count_with([("hot:test:counter", 3, 60)], ["hot:test:counter"],
                                           "hot:test:int")

    assert first == [2]
    assert second == [5, 5]
    assert 0 < await hot.client().ttl(hot.full_key("hot:test:counter")) <= 65


async def test_a_burst_larger_than_the_pool_waits_instead_of_failing():
    cache.set("hot:test:int", 7)
    burst = hot.MAX_CONNECTIONS * 6

    values = await asyncio.gather(*(hot.get_many(["hot:test:int"]) for _ in range(burst)))

    assert values == [[7]] * burst
