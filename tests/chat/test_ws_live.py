"""The studio websocket end to end: the real web server (``openclaw web``'s uvicorn,
twice for the multi-replica test, sharing the Redis channel layer; and two daphne
processes, Channels' own server), the ``websockets`` client library, the loopback
OpenAI server, the test database."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from openclaw_site.processes import web_argv
from routing.keys import create_key
from routing.models import ModelEndpoint

from .conftest import REPO, _free_port, stop_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module", autouse=True)
def quiet_server_env() -> Iterator[None]:
    """No long-term recall in the servers this module starts (the embedding model's
    load would dominate); set before ``live_server_url`` starts its server."""
    saved = os.environ.get("OPENCLAW_MEMORY_TOP_K")
    os.environ["OPENCLAW_MEMORY_TOP_K"] = "0"
    yield
    if saved is None:
        os.environ.pop("OPENCLAW_MEMORY_TOP_K", None)
    else:
        os.environ["OPENCLAW_MEMORY_TOP_K"] = saved


def start_server(argv: Callable[[int], list[str]], name: str
                 ) -> tuple[subprocess.Popen, str]:
    """A web process (``argv(port)``) serving the ASGI app on the test database and
    Redis channel layer; the process and its base URL."""
    from django.db import connection

    port = _free_port()
    argv = argv(port)
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", PYTHONUNBUFFERED="1",
               OPENCLAW_TEST_WORKER_DB=connection.settings_dict["NAME"])
    log_path = Path(os.environ["OPENCLAW_TEST_DATA_DIR"]) / f"{name}-{port}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, env=env, cwd=REPO, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{name} did not start; see {log_path}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def second_replica(live_server_url) -> Iterator[str]:
    """Another web process (``openclaw web``'s uvicorn) on the same database and Redis
    channel layer."""
    process, url = start_server(lambda port: web_argv("127.0.0.1", port), "web")
    yield url
    stop_server(process, 15)


@pytest.fixture(scope="module")
def daphne_replicas(live_server_url) -> Iterator[tuple[str, str]]:
    """Two daphne processes (Channels' own ASGI server) serving the same app, on the
    same database and Redis channel layer."""
    def argv(port: int) -> list[str]:
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                "openclaw_site.asgi:application"]

    started = [start_server(argv, "daphne") for _ in range(2)]
    yield started[0][1], started[1][1]
    for process, _url in started:
        stop_server(process, 15)


@pytest.fixture
def models(db, openai_server):
    ModelEndpoint.objects.create(name="echo", engine="echo")
    ModelEndpoint.objects.create(name="slow", engine="openai", upstream_model="slow-100",
                                 endpoint_url=openai_server.url)


@pytest.fixture
def secret(models) -> str:
    return create_key("ws-live")[1]


def ws_url(http_url: str, conversation: str = "new") -> str:
    return http_url.replace("http://", "ws://") + f"/ws/chat/{conversation}/"


def connect(http_url: str, conversation: str = "new", secret: str | None = None,
            cookie: str | None = None, origin: str | None = None):
    headers = {}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    if cookie:
        headers["Cookie"] = cookie
    return websockets.connect(ws_url(http_url, conversation), additional_headers=headers,
                              origin=origin or http_url, open_timeout=10)


async def frames_until(ws, kind: str, request: str | None = None, timeout: float = 20) -> list:
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if request is not None and frame.get("id") != request:
                continue
            frames.append((time.perf_counter(), frame))
            if frame["type"] == kind:
                return frames


async def test_tokens_stream_one_by_one_over_a_real_server(live_server_url, secret):
    async with connect(live_server_url, secret=secret) as ws:
        # when
        await ws.send(json.dumps({"type": "message", "id": "live", "content": "a b c d e",
                                  "model": "slow"}))
        frames = await frames_until(ws, "done")

    # then: every frame is stamped; tokens are spread out as the model wrote them
    assert {f["id"] for _t, f in frames} == {"live"}
    tokens = [t for t, f in frames if f["type"] == "token"]
    assert len(tokens) == 6
    gaps = [b - a for a, b in zip(tokens, tokens[1:], strict=False)]
    assert min(gaps) > 0.05, gaps  # 100 ms apart at the model, not batched on the way
    assert frames[-1][1]["content"] == "echo: a b c d e"


async def test_session_cookie_authenticates_a_browser_style_client(live_server_url, models):
    await sync_to_async(get_user_model().objects.create_user)("bob", password="pw-bob-12")
    async with httpx.AsyncClient(base_url=live_server_url) as client:
        login = await client.get("/studio/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
        await client.post("/studio/login/", data={"username": "bob", "password": "pw-bob-12",
                                                  "csrfmiddlewaretoken": token})
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    async with connect(live_server_url, cookie=cookie) as ws:
        await ws.send(json.dumps({"type": "ping", "id": 1}))
        assert json.loads(await ws.recv())["type"] == "pong"


async def test_foreign_origin_and_no_credentials_are_refused(live_server_url, secret):
    with pytest.raises(websockets.InvalidStatus):
        async with connect(live_server_url, secret=secret, origin="http://evil.example"):
            pass
    async with connect(live_server_url) as ws:
        assert json.loads(await ws.recv())["code"] == "unauthorized"
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4401


async def watched_and_stopped_elsewhere(first_url: str, second_url: str, secret: str) -> None:
    """A conversation begun on one server, joined on the other: the turn the first
    runs streams to both (its tokens one by one), and the second stops it."""
    async with connect(first_url, secret=secret) as first:
        await first.send(json.dumps({"type": "message", "content": "hello", "model": "echo"}))
        conversation = (await frames_until(first, "done"))[-1][1]["conversation"]
        async with connect(second_url, conversation, secret=secret) as second:
            past = json.loads(await second.recv())
            assert past["type"] == "history" and len(past["messages"]) == 2

            # when: a turn on the first server, watched and stopped from the second
            await first.send(json.dumps({"type": "message", "id": "x", "content":
                                         " ".join(["w"] * 30), "model": "slow"}))
            seen = await frames_until(second, "token", request="x")
            seen += await frames_until(second, "token", request="x")
            await second.send(json.dumps({"type": "stop", "id": "halt"}))
            mine = await frames_until(first, "done", request="x")
            theirs = await frames_until(second, "done", request="x")

    # then
    assert seen[0][1]["conversation"] == conversation
    tokens = [t for t, f in seen if f["type"] == "token"]
    assert tokens[1] - tokens[0] > 0.05  # relayed as the model wrote them
    assert mine[-1][1]["stopped"] is True and theirs[-1][1]["stopped"] is True
    assert len(mine[-1][1]["content"].split()) < 30


async def test_two_replicas_serve_one_conversation(live_server_url, second_replica, secret):
    await watched_and_stopped_elsewhere(live_server_url, second_replica, secret)


async def test_two_daphne_processes_serve_one_conversation(daphne_replicas, secret):
    await watched_and_stopped_elsewhere(*daphne_replicas, secret)


async def test_reconnect_shows_the_result_persisted_meanwhile(live_server_url, secret):
    async with connect(live_server_url, secret=secret) as ws:
        await ws.send(json.dumps({"type": "message", "content": "remember me", "model": "echo"}))
        done = (await frames_until(ws, "done"))[-1][1]

    # when
    async with connect(live_server_url, done["conversation"], secret=secret) as again:
        past = json.loads(await again.recv())

    # then
    assert [m["content"] for m in past["messages"]] == ["remember me", "remember me"]
    assert past["messages"][1]["id"] == done["message_id"]
