"""The circuit breaker on the real cache (the embedded Redis): it opens after N backend
failures within the window, stays open for the cooldown, lets exactly one probe
through when half-open, and its state is shared by every process."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.core.cache import caches

from inference.errors import BadRequest, ConnectionFailed, ContextTooLong, ServerError
from routing.breaker import Breaker, CircuitState, describe
from routing.models import HealthState, ModelEndpoint

REPO = Path(__file__).resolve().parents[2]
BOOM = ServerError("backend said 500", status=500)
_ids = itertools.count(int(time.time() * 1000) % 10**9)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def endpoint_id() -> int:
    """An id no other test (nor an earlier run on the same Redis) has used."""
    return next(_ids) * 1000 + os.getpid() % 1000


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock, **overrides) -> Breaker:
    options = {"failures": 3, "window_s": 60, "cooldown_s": 30, **overrides}
    return Breaker(clock=clock, **options)


def fail(b: Breaker, endpoint_id: int, times: int, exc: Exception = BOOM) -> list[bool]:
    return [b.record_failure(endpoint_id, exc, probe=False) for _ in range(times)]


def test_circuit_opens_on_the_nth_failure_within_the_window_not_before(endpoint_id, clock):
    b = breaker(clock)

    opened = fail(b, endpoint_id, 2)
    before = b.state(endpoint_id).state
    opened += fail(b, endpoint_id, 1)

    assert opened == [False, False, True]
    assert before == CircuitState.CLOSED
    assert b.state(endpoint_id).state == CircuitState.OPEN
    assert b.allow(endpoint_id) == (False, False)


def test_failures_spread_over_more_than_the_window_do_not_open(endpoint_id, clock):
    b = breaker(clock, window_s=1)

    fail(b, endpoint_id, 2)
    time.sleep(1.2)  # the window (a Redis expiry) runs out
    opened = fail(b, endpoint_id, 2)

    assert opened == [False, False]
    assert b.state(endpoint_id).state == CircuitState.CLOSED


def test_open_circuit_stays_open_for_the_cooldown_then_is_half_open(endpoint_id, clock):
    b = breaker(clock)
    fail(b, endpoint_id, 3)

    clock.now += 29.9
    during = b.state(endpoint_id)
    clock.now += 0.2
    after = b.state(endpoint_id)

    assert during.state == CircuitState.OPEN and during.open_until == 1_000_030.0
    assert after.state == CircuitState.HALF_OPEN


def test_half_open_lets_exactly_one_probe_through_among_concurrent_callers(endpoint_id,
                                                                           clock):
    b = breaker(clock)
    fail(b, endpoint_id, 3)
    clock.now += 31

    def attempt(_index: int) -> tuple[bool, bool]:
        return Breaker(failures=3, window_s=60, cooldown_s=30, clock=clock).allow(endpoint_id)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(attempt, range(32)))

    assert results.count((True, True)) == 1
    assert results.count((False, False)) == 31


def test_successful_probe_closes_the_circuit(endpoint_id, clock):
    b = breaker(clock)
    fail(b, endpoint_id, 3)
    clock.now += 31
    _allowed, probe = b.allow(endpoint_id)

    closed = b.record_success(endpoint_id, probe)

    assert closed is True
    assert b.state(endpoint_id).state == CircuitState.CLOSED
    assert b.allow(endpoint_id) == (True, False)
    assert fail(b, endpoint_id, 2) == [False, False]  # the old failures are forgotten


def test_failed_probe_opens_the_circuit_again_for_a_full_cooldown(endpoint_id, clock):
    b = breaker(clock)
    fail(b, endpoint_id, 3)
    clock.now += 31
    _allowed, probe = b.allow(endpoint_id)

    reopened = b.record_failure(endpoint_id, ConnectionFailed("refused"), probe)

    assert reopened is True
    assert b.state(endpoint_id).state == CircuitState.OPEN
    assert b.state(endpoint_id).open_until == clock.now + 30
    clock.now += 31
    assert b.allow(endpoint_id) == (True, True)  # the next probe after that cooldown


def test_client_errors_do_not_count_and_give_the_probe_back(endpoint_id, clock):
    b = breaker(clock)

    opened = fail(b, endpoint_id, 5, BadRequest("bad body", status=400))
    opened += fail(b, endpoint_id, 5, ContextTooLong("too long", status=400))
    fail(b, endpoint_id, 3)
    clock.now += 31
    _allowed, probe = b.allow(endpoint_id)
    b.record_failure(endpoint_id, BadRequest("bad body"), probe)

    assert not any(opened)
    assert b.state(endpoint_id).state == CircuitState.HALF_OPEN
    assert b.allow(endpoint_id) == (True, True)  # the probe lock was released


def test_state_is_shared_between_breakers_on_separate_cache_connections(endpoint_id, clock):
    other_cache = caches.create_connection("default")
    here, there = breaker(clock), breaker(clock, cache=other_cache)

    fail(here, endpoint_id, 2)
    opened = fail(there, endpoint_id, 1)

    assert opened == [True]
    assert here.state(endpoint_id).state == CircuitState.OPEN
    here.reset(endpoint_id)
    assert there.state(endpoint_id).state == CircuitState.CLOSED


def test_state_is_shared_with_another_process(endpoint_id, settings):
    settings.OPENCLAW_BREAKER_FAILURES = 2
    script = (
        "import django; django.setup()\n"
        "from inference.errors import ServerError\n"
        "from routing.breaker import Breaker\n"
        "b = Breaker(failures=2)\n"
        f"print([b.record_failure({endpoint_id}, ServerError('x'), False) for _ in range(2)])\n"
    )
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings")

    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)

    assert result.stdout.strip() == "[False, True]", result.stderr
    assert Breaker().state(endpoint_id).state == CircuitState.OPEN
    assert Breaker().allow(endpoint_id) == (False, False)


def test_settings_give_the_defaults(settings, endpoint_id):
    settings.OPENCLAW_BREAKER_FAILURES = 1
    settings.OPENCLAW_BREAKER_COOLDOWN_S = 5

    opened = Breaker().record_failure(endpoint_id, BOOM, probe=False)
    until = Breaker().state(endpoint_id).open_until

    assert opened is True
    assert 4 < until - time.time() <= 5


@pytest.mark.django_db
def test_admin_shows_the_circuit_and_resets_it(admin_client, settings):
    settings.OPENCLAW_BREAKER_FAILURES = 1
    instance = ModelEndpoint.objects.create(name="m1", engine="openai",
                                            endpoint_url="http://127.0.0.1:9/v1",
                                            health=HealthState.UNHEALTHY)
    Breaker().reset(instance.pk)
    Breaker().record_failure(instance.pk, BOOM, probe=False)
    shown = describe(Breaker().state(instance.pk))

    listing = admin_client.get("/admin/routing/modelendpoint/").content.decode()
    change = admin_client.get(f"/admin/routing/modelendpoint/{instance.pk}/change/")
    admin_client.post("/admin/routing/modelendpoint/",
                      {"action": "reset_circuit", "_selected_action": [instance.pk]})

    assert shown.startswith("open until ")
    assert shown in listing
    assert shown in change.content.decode()
    assert Breaker().state(instance.pk).state == CircuitState.CLOSED
