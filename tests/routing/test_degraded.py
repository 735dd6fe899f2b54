"""``/v1`` while Redis is away, through real parts: a web server and a logging worker on
a private Redis that is killed (SIGKILL) and started again, the test database, the
loopback OpenAI server.

While Redis is away the server keeps answering the keys it holds — and a key created
meanwhile, read from the database —, counts the key's rpm itself from the value it
last read, refuses past it (429, never 5xx) and adds what it counted to Redis when Redis
returns; a key revoked meanwhile is refused once Redis is back (every copy is dropped
then); every answered request's usage record is written, once.

In this process, admission's own path on a private Redis: a budget spent before the
outage stays spent during it, and reservations and settlements made during it arrive
in Redis when it returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.utils import timezone

from core import outage, redis_pipeline, shared_state
from routing.admission import admit
from routing.key_models import ApiKey
from routing.keys import KeyRefused, create_key
from routing.limits import key_limits, period_window, plan
from routing.models import ModelEndpoint
from routing.usage_models import UsageRecord
from tests.outage_services import PrivateRedis, PrivateWorker, WebServer, wait_for

logger = logging.getLogger(__name__)
RPM = 6
BODY = {"model": "steady", "temperature": 0,
        "messages": [{"role": "user", "content": "hello there"}]}  # cacheable: the cache fails open

pytestmark = pytest.mark.django_db(transaction=True)


def _statuses(client: httpx.Client, secret: str, times: int) -> list[int]:
    headers = {"Authorization": f"Bearer {secret}"}
    return [client.post("/v1/chat/completions", json=BODY, headers=headers).status_code
            for _ in range(times)]


def _minute_with_room(needed_s: int = 10) -> None:
    """Start in a minute with ``needed_s`` left: the rpm window must not roll over."""
    left = 60 - datetime.now(UTC).second
    if left < needed_s:
        time.sleep(left + 0.2)


@pytest.mark.slow
def test_v1_answers_while_redis_is_away_and_counts_limits_locally_then_reconciles(
        openai_server, tmp_path):
    # given: a web server and a logging worker on a private Redis; an rpm-6 key and a key
    # without limits, both used once (the server holds them), and the loopback model
    ModelEndpoint.objects.create(name="steady", engine="openai",
                                 endpoint_url=openai_server.url, upstream_model="echo")
    limited, limited_secret = create_key("limited", rpm_limit=RPM)
    doomed, doomed_secret = create_key("revoked during the outage")
    server = PrivateRedis(tmp_path / "redis").start()
    env = {"OPENCLAW_TEST_REDIS_URL": server.url, "OPENCLAW_RESPONSE_CACHE": "redis",
           "OPENCLAW_TEST_WORKER_DB": connection.settings_dict["NAME"]}
    web = WebServer(env, tmp_path).spawn()
    worker = PrivateWorker(broker=server.url, queues=settings.OPENCLAW_LOG_QUEUE, env=env)
    try:
        worker.spawn().wait_ready()
        web.wait_ready()
        _minute_with_room()
        label, _left = period_window("minute", timezone.now())
        counter = f"openclaw:1:apikey:{limited.family}:rpm:{label}"
        with httpx.Client(base_url=web.url, timeout=20) as client:
            before = _statuses(client, limited_secret, 2) + _statuses(client, doomed_secret, 1)

            # when: Redis is killed; requests go on; a key is created and one revoked
            server.kill()
            during = _statuses(client, limited_secret, 10)
            created, created_secret = create_key("created during the outage")
            fresh = _statuses(client, created_secret, 2)
            ApiKey.objects.filter(pk=doomed.pk).update(revoked_at=timezone.now())
            doomed_during = _statuses(client, doomed_secret, 1)

            # then: the held keys and the new one are answered, the rpm counted here:
            # 2 used before, so 4 more pass and the rest are refused — never a 5xx
            assert before == [200, 200, 200], web.log_path.read_text()[-3000:]
            assert during == [200] * (RPM - 2) + [429] * (10 - RPM + 2)
            assert fresh == [200, 200]
            assert doomed_during == [200]  # its copy is trusted until Redis returns

            # when: Redis comes back (its append-only file kept the 2 counted before)
            server.start()
            restarted, polls = time.monotonic(), []

            def reconciled() -> bool:  # the server tries Redis again once a second
                polls.extend(_statuses(client, created_secret, 1))
                return int(server.client().get(counter) or 0) == RPM

            wait_for(reconciled, 10, "the local counts added to Redis", 0.05)
            back_s = time.monotonic() - restarted
            after = _statuses(client, limited_secret, 1)
            doomed_after = _statuses(client, doomed_secret, 1)

            # then: what was counted here was added to Redis (its rpm now full: refused
            # there), the revoked key is refused, requests never failed meanwhile
            assert polls == [200] * len(polls)
            assert after == [429]
            assert doomed_after == [401]

            # and: every answered request's usage record is written, once
            answered = {limited.prefix: 2 + RPM - 2, doomed.prefix: 2,
                        created.prefix: 2 + len(polls)}
            for prefix, count in answered.items():
                wait_for(lambda p=prefix, c=count: UsageRecord.objects.filter(
                    key_prefix=p).count() >= c, 30, f"usage records of {prefix}", 0.2)
            time.sleep(0.5)
            written = {p: UsageRecord.objects.filter(key_prefix=p).count() for p in answered}
            assert written == answered
            away = during + fresh + doomed_during
            logger.info("redis outage: %d of %d /v1 requests answered, %d refused by the "
                        "local rpm, 0 errors; local counts in Redis %.2f s after its restart",
                        away.count(200), len(away), away.count(429), back_s)
    finally:
        web.stop()
        worker.stop()
        server.stop()


# --- admission in this process ----------------------------------------------------------


@pytest.fixture
def private_hot_path(tmp_path, monkeypatch):
    """The hot path's round trips (``core.shared_state``) go to a private Redis; the
    outage state is this test's own."""
    server = PrivateRedis(tmp_path / "redis").start()
    monkeypatch.setattr(shared_state, "pool", lambda: redis_pipeline.pool_for(server.url))
    monkeypatch.setattr(outage, "RETRY_S", 0.05)
    yield server
    server.stop()
    outage.OUTAGE.down = False
    outage.LOCAL.drain()
    outage.LOCAL.forget()


async def test_a_budget_spent_before_an_outage_stays_spent_and_its_counts_are_reconciled(
        private_hot_path):
    key, secret = await sync_to_async(create_key)("budget", token_budget=100,
                                                  budget_period="day")
    ask = {"secret": secret, "client_addr": "127.0.0.1", "model": "m"}
    full = shared_state.full_key(plan(key_limits(key), 0, 0)[0].names[0])
    for _ in range(2):  # 60 of 100 used, as this process read it
        await (await admit(**ask, tokens=30)).asettle(30)

    # when: Redis goes away
    private_hot_path.kill()
    during = await admit(**ask, tokens=30)  # 60 + 30 fits: counted here
    with pytest.raises(KeyRefused) as refused:
        await admit(**ask, tokens=30)  # 90 + 30 does not
    quota = await during.asettle(20)  # it used 20 of its 30

    # then: judged by what this process counted
    assert refused.value.code == "budget_exhausted"
    assert quota["used"] == 80
    assert outage.OUTAGE.down

    # when: Redis returns, the next admission's round trip adds what was counted here
    await sync_to_async(private_hot_path.start)()
    await asyncio.sleep(0.06)  # past the retry interval
    after = await admit(**ask, tokens=10)

    assert not outage.OUTAGE.down
    assert after.counted.values == [90]  # 60 kept by Redis, 20 added, 10 reserved now
    assert int(private_hot_path.client().get(full)) == 90
