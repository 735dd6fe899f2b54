"""The operations issue's check, end to end: after one studio chat over the websocket
and /v1 calls through the real web server, its /metrics (parsed with
prometheus_client's parser) shows every named family with non-zero samples."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from prometheus_client.parser import text_string_to_metric_families

from routing import rules
from routing.keys import create_key
from routing.models import ModelEndpoint, RoutingRule
from tests.core.test_metrics import FAMILIES

pytestmark = pytest.mark.django_db(transaction=True)


def registry(server_url: str) -> str:
    ModelEndpoint.objects.create(name="flaky", engine="openai", endpoint_url=server_url,
                                 upstream_model="error-500")
    ModelEndpoint.objects.create(name="steady", engine="openai", endpoint_url=server_url,
                                 upstream_model="echo")
    RoutingRule.objects.create(name="flaky then steady", priority=1,
                               condition={"field": "model", "op": "eq", "value": "flaky"},
                               target_model="flaky", fallbacks=["steady"])
    rules.bump_version()
    return create_key("metrics", token_budget=100_000)[1]


async def test_one_chat_and_v1_calls_fill_every_family(live_server_url, openai_server):
    secret = await sync_to_async(registry)(openai_server.url)
    headers = {"Authorization": f"Bearer {secret}"}
    ws_url = live_server_url.replace("http://", "ws://") + "/ws/chat/new/"

    async with websockets.connect(ws_url, additional_headers=headers,
                                  origin=live_server_url, open_timeout=10) as ws:
        # when: one studio chat (the socket stays open while /metrics is read) …
        await ws.send(json.dumps({"type": "message", "content": "hello", "model": "steady"}))
        async with asyncio.timeout(30):
            while json.loads(await ws.recv())["type"] != "done":
                pass
        async with httpx.AsyncClient(base_url=live_server_url, headers=headers,
                                     timeout=30) as client:
            # … and /v1 calls: a fallback, a streamed answer, a cache miss then a hit
            ask = {"model": "flaky", "messages": [{"role": "user", "content": "hi"}],
                   "temperature": 0}
            for _ in range(2):
                assert (await client.post("/v1/chat/completions", json=ask)).status_code == 200
            streamed = await client.post("/v1/chat/completions",
                                         json={**ask, "model": "steady", "stream": True})
            assert streamed.status_code == 200
            assert (await client.get("/healthz")).status_code == 200  # a Django view
            await asyncio.sleep(1)  # usage records reach the (unconsumed) logs queue
            text = (await client.get("/metrics")).text

    # then
    found = {f.name: f.samples for f in text_string_to_metric_families(text)}
    assert not FAMILIES - set(found), f"not exported: {sorted(FAMILIES - set(found))}"
    empty = {name for name in FAMILIES - {"openclaw_circuit_state"}
             if not any(sample.value for sample in found[name])}
    assert not empty, f"exported without a non-zero sample: {sorted(empty)}"
    sockets = [s.value for s in found["openclaw_websocket_connections"]]
    assert sum(sockets) >= 1
