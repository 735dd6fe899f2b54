"""Liveness and readiness checks: each dependency is probed with a deadline and
reported by name, with its latency, so an operator sees what is missing."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.core.cache import cache
from django.db import connection

from inference.tasks import ping
from openclaw_site.celery import app

CHECK_TIMEOUT_S = 3.0
WORKER_TIMEOUT_S = 10.0


def _database() -> None:
    pool = getattr(connection, "pool", None)  # the postgresql backend's psycopg pool
    if pool is not None:
        # A bounded wait (the pool's own is 10 s): during an outage the probes must not
        # park the executor's few threads, which the requests share.
        pool.open()  # as Django's first connection would (a no-op once open)
        with pool.connection(timeout=CHECK_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()  # this may run outside the request's thread


def _broker() -> None:
    with app.connection_for_write() as conn:
        # One attempt: a retry would sleep ~1 s and report a broker that was down as up.
        # kombu adds the timeout to time(), so float seconds work; its stubs ask for an int
        conn.ensure_connection(max_retries=0,
                               timeout=CHECK_TIMEOUT_S)  # type: ignore[arg-type]  # stubs: int


async def _channel_layer() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "readyz.ping"})
    message = await layer.receive(channel)
    if message.get("type") != "readyz.ping":
        raise RuntimeError(f"unexpected message {message!r}")


async def _cache() -> None:
    key = f"readyz:{uuid.uuid4().hex}"
    await cache.aset(key, "ok", 10)
    if await cache.aget(key) != "ok":
        raise RuntimeError("value written was not read back")
    await cache.adelete(key)


def _worker_round_trip() -> dict[str, Any]:
    """Send a task from this (web) process and wait for a worker's answer."""
    result = ping.apply_async(kwargs={"sent_at": time.time()})
    answer = result.get(timeout=WORKER_TIMEOUT_S)
    result.forget()
    return {"worker_pid": answer["pid"], "worker_host": answer["hostname"]}


async def _timed(check: Callable[[], Awaitable[Any]], timeout: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        extra = await asyncio.wait_for(check(), timeout)
    except Exception as exc:  # any failure is a result to report, not a crash
        reason = str(exc) or type(exc).__name__
        return {
            "ok": False,
            "error": reason[:300],
            "ms": round((time.perf_counter() - started) * 1000, 2),
        }
    report = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 2)}
    report.update(extra or {})
    return report


async def readiness(include_worker: bool = False) -> dict[str, Any]:
    checks: dict[str, Callable[[], Awaitable[Any]]] = {
        "database": sync_to_async(_database, thread_sensitive=False),
        "broker": sync_to_async(_broker, thread_sensitive=False),
        "channel_layer": _channel_layer,
        "cache": _cache,
    }
    timeouts = dict.fromkeys(checks, CHECK_TIMEOUT_S)
    if include_worker:
        checks["worker"] = sync_to_async(_worker_round_trip, thread_sensitive=False)
        timeouts["worker"] = WORKER_TIMEOUT_S + 1
    results = await asyncio.gather(*(_timed(fn, timeouts[name]) for name, fn in checks.items()))
    named = dict(zip(checks, results, strict=True))
    return {
        "status": "ready" if all(r["ok"] for r in results) else "not ready",
        "checks": named,
        "web_pid": os.getpid(),
    }
