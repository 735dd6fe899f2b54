"""The response cache: which requests are cacheable, hits and misses (and their metric)
in the local LRU and in the real embedded Redis, TTL and size, opt-outs, a Redis that
is away, and a hit measured against a real miss through the gateway."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest
from asgiref.sync import sync_to_async
from prometheus_client import REGISTRY

from inference.engines.base import ChatRequest
from routing import gateway, response_cache, rules
from routing.keys import create_key
from routing.models import ModelEndpoint
from routing.rules import RequestFacts

HELLO = [{"role": "user", "content": "hello there"}]
ANSWER = {"object": "chat.completion", "choices": [{"message": {"content": "hi"}}]}


@pytest.fixture(autouse=True)
def fresh_cache():
    response_cache.clear_local()
    yield
    response_cache.clear_local()


def lookups(result: str) -> float:
    return REGISTRY.get_sample_value("openclaw_response_cache_lookups_total",
                                     {"result": result}) or 0.0


def test_only_unstreamed_temperature_zero_requests_are_cacheable():
    assert response_cache.cache_key("m", HELLO, {"temperature": 0}) is not None
    assert response_cache.cache_key("m", HELLO, {"temperature": 0.0, "stream": False})
    assert response_cache.cache_key("m", HELLO, {"temperature": 0, "stream": True}) is None
    assert response_cache.cache_key("m", HELLO, {}) is None  # OpenAI's default is 1
    assert response_cache.cache_key("m", HELLO, {"temperature": 0.7}) is None
    assert response_cache.cache_key("m", HELLO, {"temperature": False}) is None


def test_the_key_covers_model_messages_and_every_parameter():
    key = response_cache.cache_key("m", HELLO, {"temperature": 0, "max_tokens": 5})

    assert key == response_cache.cache_key("m", HELLO, {"max_tokens": 5, "temperature": 0,
                                                        "stream_options": {}})
    assert key != response_cache.cache_key("other", HELLO, {"temperature": 0, "max_tokens": 5})
    assert key != response_cache.cache_key("m", [{"role": "user", "content": "hello"}],
                                           {"temperature": 0, "max_tokens": 5})
    assert key != response_cache.cache_key("m", HELLO, {"temperature": 0, "max_tokens": 6})


def test_chat_params_carry_the_request_fields_and_extras():
    chat = ChatRequest(messages=HELLO, max_tokens=8, temperature=0.0, seed=3,
                       extra={"response_format": {"type": "json_object"}})

    assert response_cache.chat_params(chat) == {
        "max_tokens": 8, "temperature": 0.0, "seed": 3,
        "response_format": {"type": "json_object"}}


def test_off_caches_nothing(settings):
    settings.OPENCLAW_RESPONSE_CACHE = "off"

    assert response_cache.cache_key("m", HELLO, {"temperature": 0}) is None


async def test_local_hit_returns_a_copy_and_counts_hits_and_misses():
    key = response_cache.cache_key("m", HELLO, {"temperature": 0})
    hits, misses = lookups("hit"), lookups("miss")

    assert await response_cache.aget(key) is None
    await response_cache.aput(key, ANSWER)
    first = await response_cache.aget(key)
    first["choices"] = []
    second = await response_cache.aget(key)

    assert second == ANSWER
    assert (lookups("hit") - hits, lookups("miss") - misses) == (2, 1)


async def test_local_entries_expire_after_the_ttl_and_the_oldest_go_first(settings):
    settings.OPENCLAW_RESPONSE_CACHE_TTL = 1
    settings.OPENCLAW_RESPONSE_CACHE_SIZE = 2
    keys = [response_cache.cache_key(f"m{i}", HELLO, {"temperature": 0}) for i in range(3)]
    for key in keys:
        await response_cache.aput(key, ANSWER)

    assert await response_cache.aget(keys[0]) is None  # evicted: only 2 kept
    assert await response_cache.aget(keys[2]) == ANSWER
    await asyncio.sleep(1.1)
    assert await response_cache.aget(keys[2]) is None


@pytest.mark.django_db
async def test_redis_backend_shares_entries_with_a_ttl(settings):
    settings.OPENCLAW_RESPONSE_CACHE = "redis"
    settings.OPENCLAW_RESPONSE_CACHE_TTL = 120
    key = response_cache.cache_key("redis-m", HELLO, {"temperature": 0, "seed": time.time()})

    assert await response_cache.aget(key) is None
    await response_cache.aput(key, ANSWER)

    assert await response_cache.aget(key) == ANSWER
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(settings.CACHE_LOCATION)
    try:
        assert 0 < await client.ttl(key) <= 120
    finally:
        await client.aclose()


async def test_a_redis_that_is_away_is_a_miss_not_an_error(settings):
    settings.OPENCLAW_RESPONSE_CACHE = "redis"
    settings.CACHE_LOCATION = "unix:///nonexistent/redis.sock"
    key = response_cache.cache_key("m", HELLO, {"temperature": 0})
    misses = lookups("miss")

    await response_cache.aput(key, ANSWER)

    assert await response_cache.aget(key) is None
    assert lookups("miss") - misses == 1


@pytest.mark.django_db
def test_a_key_can_opt_out_and_a_client_can_bypass(settings):
    key, _secret = create_key("no cache")
    other, _secret = create_key("cache")
    settings.OPENCLAW_RESPONSE_CACHE_EXCLUDE_KEYS = [key.prefix]

    assert response_cache.enabled_for(key) is False
    assert response_cache.enabled_for(other) is True
    assert response_cache.bypassed({"Cache-Control": "no-cache"})
    assert response_cache.bypassed({"Cache-Control": "no-store, max-age=0"})
    assert not response_cache.bypassed({})


@pytest.mark.django_db(transaction=True)
async def test_a_hit_is_at_least_ten_times_faster_than_the_model_call_it_saves(
        openai_server):
    # given: a model on the loopback OpenAI server, and its answer cached once
    await sync_to_async(ModelEndpoint.objects.create)(
        name="cached", engine="openai", endpoint_url=openai_server.url, upstream_model="echo")
    await sync_to_async(rules.bump_version)()
    chat = ChatRequest(messages=HELLO, temperature=0.0, max_tokens=16)
    facts = RequestFacts(model="cached", messages=HELLO)
    key = response_cache.cache_key("cached", HELLO, response_cache.chat_params(chat))

    # when: misses (the gateway calls the model) and hits are timed
    misses, hits = [], []
    for _ in range(7):
        started = time.perf_counter()
        completion, _meta = await gateway.complete(facts, chat)
        misses.append(time.perf_counter() - started)
        await response_cache.aput(key, {"text": completion.text})
        started = time.perf_counter()
        cached = await response_cache.aget(key)
        hits.append(time.perf_counter() - started)

    # then
    assert cached == {"text": "echo: hello there"}
    assert statistics.median(misses) >= 10 * statistics.median(hits), (misses, hits)
