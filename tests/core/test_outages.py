"""Outages of the database and of Redis, through real parts.

- A database that crashes under ``/v1`` load: a web server and a logging worker on a
  private PostgreSQL (a copy of the test database) that is stopped at once, as a crash
  would, and started again. The key and the routing table the server holds keep
  ``/v1`` answering, ``/healthz`` stays up, and every usage record and audit event made
  meanwhile is written once the database is back (counted).
- Redis restarting under its clients: the hot path's pipeline client, Django's cache
  client and the channel layer each answer again without a restart of their process.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import httpx
import psycopg
import pytest
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings
from django.core.cache.backends.redis import RedisCache
from django.db import connection

from core import redis_pipeline
from core.audit import audit, audit_buffer
from core.cache import SharedPoolRedisCache
from core.outage import LocalCounters
from routing.keys import create_key
from routing.models import ModelEndpoint
from tests.outage_services import (
    PrivatePostgres,
    PrivateRedis,
    PrivateWorker,
    WebServer,
    wait_for,
)

logger = logging.getLogger(__name__)
BODY = {"model": "steady", "messages": [{"role": "user", "content": "hello there"}]}


def _count(uri: str, sql: str, params: list) -> int:
    with psycopg.connect(uri, connect_timeout=2) as conn:
        return conn.execute(sql, params).fetchone()[0]


def _ask(client: httpx.Client, times: int, pause: float = 0.0) -> list[int]:
    statuses = []
    for _ in range(times):
        statuses.append(client.post("/v1/chat/completions", json=BODY).status_code)
        time.sleep(pause)
    return statuses


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_usage_and_audit_rows_made_while_the_database_is_down_all_arrive_after_it_returns(
        embedded_services, openai_server, tmp_path):
    # given: a key and a model, copied into a private PostgreSQL that a web server and a
    # logging worker use
    ModelEndpoint.objects.create(name="steady", engine="openai",
                                 endpoint_url=openai_server.url, upstream_model="echo")
    key, secret = create_key("outage")
    pg = PrivatePostgres(tmp_path / "pg").start()
    session_pg, _redis = embedded_services
    pg.copy_from(session_pg.uri(connection.settings_dict["NAME"]))
    env = {"OPENCLAW_TEST_WORKER_DB": pg.database,
           "OPENCLAW_TEST_WORKER_DB_HOST": str(pg.folder)}
    web = WebServer(env, tmp_path).spawn()
    worker = PrivateWorker(queues=settings.OPENCLAW_LOG_QUEUE, database=pg.database,
                           env={"OPENCLAW_TEST_WORKER_DB_HOST": str(pg.folder)})
    usage = "SELECT count(*) FROM routing_usagerecord WHERE key_prefix = %s"
    audits = "SELECT count(*) FROM routing_auditevent WHERE action = %s"
    action = f"test.outage.{uuid.uuid4().hex[:8]}"
    try:
        worker.spawn().wait_ready()
        web.wait_ready()
        with httpx.Client(base_url=web.url, timeout=20,
                          headers={"Authorization": f"Bearer {secret}"}) as client:
            before = _ask(client, 10)
            wait_for(lambda: _count(pg.uri(), usage, [key.prefix]) == 10, 20,
                     "the first usage records")

            # when: the database crashes, requests and audit events go on for 3 s
            pg.crash()
            during = _ask(client, 30, pause=0.1)
            health = httpx.get(f"{web.url}/healthz", timeout=5).status_code
            for index in range(20):
                audit(action, target=f"event {index}")
            audit_buffer.flush()
            time.sleep(12)  # longer than the pool's wait for a connection (10 s)

            # then: the server answered from what it holds …
            assert before == [200] * 10
            assert during == [200] * 30
            assert health == 200

            # … and once the database is back, every record made meanwhile is written
            restarted = time.monotonic()
            pg.start()
            wait_for(lambda: _count(pg.uri(), usage, [key.prefix]) >= 40, 30,
                     "the usage records made during the outage")
            wait_for(lambda: _count(pg.uri(), audits, [action]) >= 20, 30,
                     "the audit events made during the outage")
            caught_up = time.monotonic() - restarted
            after = _ask(client, 5)
            wait_for(lambda: _count(pg.uri(), usage, [key.prefix]) >= 45, 20,
                     "the usage records after the outage")
            time.sleep(0.5)  # nothing is written twice either
            assert _count(pg.uri(), usage, [key.prefix]) == 45
            assert _count(pg.uri(), audits, [action]) == 20
            assert after == [200] * 5
            log = worker.log_path.read_text()
            retried = sum("retry" in line.lower() for line in log.splitlines())
            assert retried, log[-3000:]  # the writes were retried, not dropped
            logger.info("database outage: 30 of 30 /v1 requests answered; %d write tries "
                        "retried; every row written %.1f s after the database restarted",
                        retried, caught_up)
    finally:
        web.stop()
        worker.stop()
        pg.stop()


# --- counting while Redis is away ----------------------------------------------------------


def test_local_counters_judge_as_the_admit_script_and_keep_what_they_added_for_redis():
    counters = LocalCounters()
    counters.note(["rpm", "tpm"], [4, 100])  # as Redis last gave them
    one = [("rpm", 5, 1, 1, 60), ("tpm", 200, 50, 80, 60)]  # name, ceiling, fit, add, ttl

    assert counters.admit(one) == (0, [5, 180])
    assert counters.admit(one) == (1, [5, 180])  # the rpm is full: nothing added
    assert counters.add([("tpm", -30, 60), ("ended", 3, 0)]) == [150, 3]
    drained = counters.drain()
    counters.restore(drained)  # Redis went away again before they were sent

    assert sorted(drained) == [("rpm", 1, 60), ("tpm", 50, 60)]  # an ended window is left out
    assert sorted(counters.drain()) == sorted(drained)
    assert counters.drain() == []
    counters.forget()
    assert counters.read(["rpm", "other"]) == [4, 0]  # back to what Redis said


# --- Redis restarting under its clients ----------------------------------------------------


async def test_redis_clients_reconnect_after_a_restart_without_their_process(tmp_path):
    server = PrivateRedis(tmp_path / "redis").start()
    pool = redis_pipeline.Pool(server.url)
    cache: RedisCache = SharedPoolRedisCache(server.url, {"KEY_PREFIX": "t"})
    layer = RedisPubSubChannelLayer(hosts=[server.url])
    try:
        channel = await layer.new_channel()
        await pool.execute([("SET", "k", "1")])
        await asyncio.to_thread(cache.set, "c", 1)
        await layer.send(channel, {"type": "t.ping", "n": 1})
        assert (await asyncio.wait_for(layer.receive(channel), 5))["n"] == 1

        # when: Redis is killed and started again, with no call made meanwhile
        server.kill()
        await asyncio.to_thread(server.start)

        # then: the first calls of each client after the restart succeed
        assert await pool.execute([("GET", "k")]) == [b"1"]  # the idle connection was dead
        assert await asyncio.to_thread(cache.get, "c") == 1
        # the layer's receiver re-subscribes by itself (a receive cancelled by a timeout
        # would unsubscribe its channel: one receive waits while sends are repeated)
        receiving = asyncio.ensure_future(layer.receive(channel))
        started = time.monotonic()
        while not receiving.done() and time.monotonic() - started < 10:
            await layer.send(channel, {"type": "t.ping", "n": 2})
            await asyncio.wait([receiving], timeout=0.25)
        assert receiving.done(), "the channel layer did not reconnect within 10 s"
        assert receiving.result()["n"] == 2

        # and: while it is down a call fails fast and clearly, then works again
        server.kill()
        started = time.monotonic()
        with pytest.raises(redis_pipeline.RedisUnavailable):
            await pool.execute([("GET", "k")])
        assert time.monotonic() - started < 1
        await asyncio.to_thread(server.start)
        assert await pool.execute([("GET", "k")]) == [b"1"]
    finally:
        await layer.flush()
        for connection_ in pool.idle:
            connection_.close()
        server.stop()
