"""Timeouts that leave room for a fallback: a primary that never starts its answer is
given up in time for the fallback to answer within the request's deadline — with the
defaults (a first-byte timeout of 20 s under a 60 s deadline), and with a short
deadline the client passes on (``x-openclaw-deadline-ms``), which the gateway splits
so that the fallback still has half of it. Real parts: the loopback OpenAI server
(hanging with ``slowstart-…``), PostgreSQL and Redis; the calls go through the
gateway as every ``/v1`` surface and batch line makes them."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from inference.engines.base import ChatRequest
from inference.errors import EngineTimeout
from routing import gateway, rules
from routing.attempts import Budget
from routing.models import ModelEndpoint, RoutingRule
from routing.rules import RequestFacts

HELLO = [{"role": "user", "content": "hello there"}]
HANG = "echo+slowstart-600000"  # the server sends no response headers for ten minutes


@pytest.fixture
def primary_with_backup(transactional_db, openai_server):
    """``primary`` hangs; its rule falls back to ``backup``, which answers. Both have
    the registry's default timeouts."""
    RoutingRule.objects.create(name="Primary with backup", priority=10,
                               condition={"field": "model", "op": "eq", "value": "primary"},
                               target_model="primary", fallbacks=["backup"])
    ModelEndpoint.objects.create(name="primary", engine="openai",
                                 endpoint_url=openai_server.url, upstream_model=HANG)
    ModelEndpoint.objects.create(name="backup", engine="openai",
                                 endpoint_url=openai_server.url, upstream_model="echo")
    rules.clear_local_copy()
    rules.bump_version()


async def streamed(facts: RequestFacts) -> tuple[str, gateway.GatewayMeta]:
    meta = gateway.GatewayMeta()
    text = "".join([delta.text async for delta in gateway.stream(
        facts, ChatRequest(messages=HELLO), meta) if delta.text])
    return text, meta


def test_the_first_byte_timeout_defaults_to_a_third_of_the_request_deadline():
    assert ModelEndpoint().first_byte_timeout == 20.0
    assert ModelEndpoint().first_byte_timeout <= gateway.DEFAULT_DEADLINE_S / 3


def test_an_attempt_waits_at_most_half_the_deadline_left_while_a_fallback_remains():
    budget = Budget(60.0)

    assert budget.first_byte_wait(60.0, more=True) == pytest.approx(30.0, abs=0.5)
    assert budget.first_byte_wait(60.0, more=False) == pytest.approx(60.0, abs=0.5)
    assert budget.first_byte_wait(20.0, more=True) == 20.0
    assert Budget(0.001).first_byte_wait(20.0, more=False) == 0.1  # never zero


@pytest.mark.slow
async def test_a_hanging_primary_is_answered_by_the_fallback_within_the_default_deadline(
        primary_with_backup):
    facts = RequestFacts(model="primary", messages=HELLO)

    # when: a whole answer and a stream, at once, with every default
    started = time.monotonic()
    (completion, meta), (text, stream_meta) = await asyncio.gather(
        gateway.complete(facts, ChatRequest(messages=HELLO)), streamed(facts))
    elapsed = time.monotonic() - started

    # then: the primary was given up at its first-byte timeout, the backup answered
    assert completion.text == text == "echo: hello there"
    assert meta.models_tried == stream_meta.models_tried == ["primary", "backup"]
    assert meta.models == stream_meta.models == ["backup"]
    assert 20.0 <= elapsed < 25.0 < gateway.DEFAULT_DEADLINE_S, elapsed


async def test_a_short_deadline_is_split_so_that_the_fallback_still_answers(
        primary_with_backup):
    # given: the primary keeps an older install's first-byte timeout, 60 s
    await ModelEndpoint.objects.filter(name="primary").aupdate(first_byte_timeout=60.0)
    await sync_to_async(rules.bump_version)()
    facts = RequestFacts(model="primary", messages=HELLO)

    # when: the client allows 2 s
    started = time.monotonic()
    completion, meta = await gateway.complete(
        facts, ChatRequest(messages=HELLO),
        gateway.deadline_from_headers({gateway.DEADLINE_HEADER: "2000"}))
    elapsed = time.monotonic() - started

    # then: the primary had half of it, the backup answered in the other half
    assert completion.text == "echo: hello there" and meta.models == ["backup"]
    assert 1.0 <= elapsed < 2.0, elapsed


async def test_the_last_instance_on_the_route_may_wait_for_all_the_deadline_left(
        transactional_db, openai_server):
    await ModelEndpoint.objects.acreate(name="alone", engine="openai",
                                        endpoint_url=openai_server.url, upstream_model=HANG)
    await sync_to_async(rules.bump_version)()

    started = time.monotonic()
    with pytest.raises(EngineTimeout) as timed_out:
        await gateway.complete(RequestFacts(model="alone", messages=HELLO),
                               ChatRequest(messages=HELLO), deadline_s=1.5)
    elapsed = time.monotonic() - started

    # cut at the deadline, not at its own first-byte timeout (20 s), nor at half
    assert timed_out.value.phase == "first_byte"
    assert 1.4 <= elapsed < 2.5, elapsed
