"""Balancing strategies, their statistics in the shared cache, the per-process endpoint
table, and the retry/backoff rules of the gateway."""

from __future__ import annotations

import random

import pytest
from django.core.cache import cache, caches

from inference.errors import BadRequest, EngineTimeout, RateLimited, ServerError
from routing import attempts, gateway, rules
from routing.balancer import Balancer, Stats, disagreeing_names, order, strategy_of
from routing.breaker import Breaker
from routing.models import Balancing, ModelEndpoint

IDS = (910001, 910002, 910003)


@pytest.fixture(autouse=True)
def clean_cache():
    keys = [f"balance:{i}:{part}" for i in IDS for part in ("inflight", "ttft")]
    keys += [f"breaker:{i}:{part}" for i in IDS for part in ("open", "fails", "probe")]
    cache.delete_many(keys)
    yield
    cache.delete_many(keys)


def instances(*weights: int, balancing: str = Balancing.WEIGHTED) -> list[ModelEndpoint]:
    return [ModelEndpoint(pk=pk, name="m", weight=w, balancing=balancing)
            for pk, w in zip(IDS, weights, strict=False)]


def test_weighted_skips_drained_and_puts_open_circuits_last():
    a, b, c = instances(1, 0, 5)
    stats = Stats(circuit_closed={a.pk: False, c.pk: True})

    orders = {tuple(i.pk for i in order([a, b, c], Balancing.WEIGHTED, stats, random.Random(s)))
              for s in range(20)}

    assert orders == {(c.pk, a.pk)}


def test_weighted_follows_the_weights():
    a, b = instances(1, 9)
    rng = random.Random(1)
    firsts = [order([a, b], Balancing.WEIGHTED, Stats(), rng)[0].pk for _ in range(1000)]

    assert 850 < firsts.count(b.pk) < 950


def test_least_busy_picks_the_fewest_in_flight_ties_by_weight():
    a, b, c = instances(1, 1, 1, balancing=Balancing.LEAST_BUSY)
    stats = Stats(in_flight={a.pk: 3, b.pk: 1, c.pk: 1})

    firsts = {order([a, b, c], Balancing.LEAST_BUSY, stats, random.Random(s))[0].pk
              for s in range(30)}
    last = order([a, b, c], Balancing.LEAST_BUSY, stats)[-1]

    assert firsts == {b.pk, c.pk}
    assert last.pk == a.pk


def test_latency_measures_the_unmeasured_first_then_the_fastest():
    a, b, c = instances(1, 1, 1, balancing=Balancing.LATENCY)
    measured = Stats(ttft={a.pk: 0.5, b.pk: 0.1})

    assert [i.pk for i in order([a, b, c], Balancing.LATENCY, measured)] == [c.pk, b.pk, a.pk]


def test_in_flight_counts_are_shared_between_two_cache_clients():
    # given two processes' own cache clients
    one, two = Balancer(caches.create_connection("default")), Balancer(
        caches.create_connection("default"))

    # when one process starts two requests and the other one ends one
    one.acquire(IDS[0])
    one.acquire(IDS[0])
    two.acquire(IDS[1])
    two.release(IDS[0])

    # then both see the same counts
    seen = [b.stats(IDS[:2], Balancing.LEAST_BUSY).in_flight for b in (one, two)]
    assert seen == [{IDS[0]: 1, IDS[1]: 1}] * 2


def test_in_flight_counter_expires_and_a_late_release_is_harmless():
    balancer = Balancer()
    balancer.acquire(IDS[0])
    cache.delete(f"balance:{IDS[0]}:inflight")  # as if its TTL ran out

    balancer.release(IDS[0])

    assert balancer.stats([IDS[0]], Balancing.LEAST_BUSY).in_flight == {}


def test_ttft_average_moves_towards_new_samples():
    balancer = Balancer()

    first = balancer.observe_ttft(IDS[0], 1.0)
    second = balancer.observe_ttft(IDS[0], 0.0)

    assert first == 1.0
    assert 0.0 < second < 1.0
    assert balancer.stats([IDS[0]], Balancing.LATENCY).ttft == {IDS[0]: second}


def test_stats_see_open_circuits():
    Breaker(cooldown_s=30)._open(IDS[0])

    stats = Balancer().stats(IDS[:2], Balancing.WEIGHTED)

    assert stats.circuit_closed == {IDS[0]: False, IDS[1]: True}


def test_strategy_of_a_name_is_its_first_instances_and_disagreement_is_found():
    a, b = instances(1, 1)
    b.balancing = Balancing.LATENCY

    assert strategy_of([b, a]) == Balancing.WEIGHTED
    assert disagreeing_names([("m", "weighted"), ("m", "latency"), ("n", "latency")]) == ["m"]


@pytest.mark.django_db
def test_routing_table_is_queried_once_per_routing_version(django_assert_num_queries):
    ModelEndpoint.objects.create(name="kept", engine="echo")
    rules.bump_version()
    version = rules.current_version()

    with django_assert_num_queries(2):  # the rules and the endpoints, once
        first = rules.TABLE.held_at(version)
        again = rules.TABLE.held_at(version)
    rules.bump_version()
    with django_assert_num_queries(2):
        rules.TABLE.held_at(rules.current_version())

    assert [e.name for e in first.value.endpoints["kept"]] == ["kept"] and again is first


def test_transient_failures_are_retried_after_a_short_backoff():
    rng = random.Random(0)

    delay = attempts.retry_delay(ServerError("busy", status=503), 1, 10.0, rng)

    assert 0.025 <= delay <= 0.075
    assert attempts.retry_delay(ServerError("busy", status=503), 2, 10.0) is None  # attempts
    assert attempts.retry_delay(ServerError("bug", status=500), 1, 10.0) is None  # not transient
    assert attempts.retry_delay(BadRequest("no"), 1, 10.0) is None
    assert attempts.retry_delay(EngineTimeout("slow", phase="first_byte"), 1, 10.0) is None
    assert attempts.retry_delay(EngineTimeout("down", phase="connect"), 1, 10.0) is not None


def test_retry_after_is_honoured_within_the_deadline_and_a_cap():
    assert attempts.retry_delay(RateLimited("wait", retry_after=0.5), 1, 10.0) == 0.5
    assert attempts.retry_delay(RateLimited("wait", retry_after=0.5), 1, 0.4) is None
    assert attempts.retry_delay(RateLimited("wait", retry_after=7), 1, 60.0) is None
    assert attempts.retry_delay(ServerError("busy", status=503), 1, 0.01) is None


def test_deadline_comes_from_the_header_or_the_default():
    assert gateway.deadline_from_headers({"x-openclaw-deadline-ms": "1500"}) == 1.5
    assert gateway.deadline_from_headers({"x-openclaw-deadline-ms": "soon"}) is None
    assert gateway.deadline_from_headers({}) is None
    budget = attempts.Budget(None)
    assert gateway.DEFAULT_DEADLINE_S - 1 < budget.remaining() <= gateway.DEFAULT_DEADLINE_S
    budget.attempts = attempts.MAX_ATTEMPTS
    assert not budget.may_start()
