"""The hot path's Redis access (``core.shared_state``) against the embedded Redis: values
Django's cache wrote read back as Django would, and a burst of concurrent requests
larger than the connection pool waits for connections instead of failing."""

from __future__ import annotations

import asyncio
import socket

import pytest
from django.core.cache import cache

from core import redis_pipeline, shared_state


async def test_reads_what_djangos_cache_wrote():
    cache.set("hot:test:int", 7)
    cache.set("hot:test:text", "a-version-token")

    assert await shared_state.get_many(["hot:test:int", "hot:test:text", "hot:test:none"]) == [
        7, "a-version-token", None]


async def test_counters_are_created_with_a_ttl_and_counted_across_calls():
    cache.delete("hot:test:counter")

    first = await shared_state.count([("hot:test:counter", 2, 60)], [])
    second, version = await shared_state.count_with([("hot:test:counter", 3, 60)],
                                                    ["hot:test:counter"], "hot:test:int")

    assert first == [2]
    assert second == [5, 5]
    (ttl,) = await shared_state.execute([("TTL", shared_state.full_key("hot:test:counter"))])
    assert 0 < ttl <= 65


async def test_a_burst_larger_than_the_pool_waits_instead_of_failing():
    cache.set("hot:test:int", 7)
    burst = redis_pipeline.MAX_CONNECTIONS * 6

    values = await asyncio.gather(*(shared_state.get_many(["hot:test:int"]) for _ in range(burst)))

    assert values == [[7]] * burst


async def test_an_error_reply_is_raised_and_the_connection_stays_usable():
    cache.set("hot:test:text", "not a number")

    with pytest.raises(redis_pipeline.RedisReplyError):
        await shared_state.execute([("INCR", shared_state.full_key("hot:test:text"))])

    assert await shared_state.get_many(["hot:test:text"]) == ["not a number"]


async def test_an_unreachable_redis_is_a_clear_error():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(redis_pipeline.RedisUnavailable, match="cannot connect"):
        await redis_pipeline.Pool(f"redis://127.0.0.1:{port}/0").execute([("PING",)])


async def test_background_additions_of_one_iteration_all_arrive():
    cache.delete("hot:test:usage")

    for _ in range(50):  # 50 requests ending together: one coalesced round trip
        shared_state.add_soon([("hot:test:usage", 3, 60)])
    for _ in range(100):
        await asyncio.sleep(0.01)
        if cache.get("hot:test:usage") == 150:
            break

    assert cache.get("hot:test:usage") == 150
