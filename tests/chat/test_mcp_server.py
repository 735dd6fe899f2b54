"""OpenClaw's ``/mcp`` with the official ``mcp`` client, unchanged — ``ClientSession``
over its Streamable HTTP transport (the initialize handshake) and the high-level
``Client`` (the 2026-07-28 protocol, no handshake) — against the live web server
(``openclaw web``'s uvicorn), the loopback OpenAI server as the model and the test
database: the tools a key sees, a workflow run end to end and continued, an approval and
its resume, a public built-in tool (found by the server through an ``openclaw.tools``
entry point), the admission's refusals at the HTTP level in ``/v1``'s error shape, the
stateless wire; and the main paths once more in this process, for coverage."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from asgiref.sync import sync_to_async
from mcp.client import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from chat.models import Message, Tool, ToolKind, Workflow
from chat.tools import registry
from openclaw_site.asgi import application
from routing.keys import create_key
from routing.models import ModelEndpoint

from .conftest import web_server
from .mcp_dummy_tools import SHOUT

pytestmark = pytest.mark.django_db(transaction=True)

ENTRY_POINTS = "[openclaw.tools]\nmcp_test_shout = tests.chat.mcp_dummy_tools:SHOUT\n"


@pytest.fixture(scope="module")
def server_url(django_db_setup, tmp_path_factory) -> Iterator[str]:
    """The web server, with the dummy tool package installed as pip would (a
    ``*.dist-info`` with its entry points on its ``PYTHONPATH``) and no long-term recall."""
    site = tmp_path_factory.mktemp("site")
    dist_info = site / "openclaw_mcp_test_tools-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: openclaw-mcp-test-tools\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    with web_server("web-mcp", PYTHONPATH=path, OPENCLAW_MEMORY_TOP_K="0") as (url, _log):
        yield url


def workflow(slug: str, *, approval: bool = False, **fields: Any) -> Workflow:
    nodes = [{"id": "recall", "type": "memory_recall", "config": {"long_term": False}},
             {"id": "answer", "type": "llm"}, {"id": "store", "type": "memory_write"}]
    edges = [{"source": "recall", "target": "answer"}, {"source": "answer", "target": "store"}]
    if approval:
        nodes.insert(2, {"id": "review", "type": "human_approval"})
        edges[1:] = [{"source": "answer", "target": "review"},
                     {"source": "review", "target": "store"}]
    return Workflow.objects.create(slug=slug, name=slug.title(), default_model="recorded",
                                   description=f"The {slug} workflow.",
                                   definition={"nodes": nodes, "edges": edges}, **fields)


@pytest.fixture
def rows(openai_server) -> None:
    """Two published workflows (one asks for approval), a disabled one, the dummy tool
    public and the same code again as a tool that is not."""
    ModelEndpoint.objects.create(name="recorded", engine="openai", upstream_model="echo",
                                 endpoint_url=openai_server.url)
    workflow("plain")
    workflow("checked", approval=True)
    workflow("retired", enabled=False)
    Tool.objects.create(name="mcp_test_shout", kind=ToolKind.BUILTIN, builtin=SHOUT.name,
                        description=SHOUT.description, parameters=SHOUT.parameters,
                        public=True)
    Tool.objects.create(name="mcp_test_private", kind=ToolKind.BUILTIN, builtin=SHOUT.name,
                        parameters=SHOUT.parameters)


@pytest.fixture
def site(server_url, rows) -> str:
    """The live server's URL, with the rows above."""
    return server_url


@asynccontextmanager
async def session(url: str, secret: str | None,
                  refusals: list[tuple[int, str]] | None = None,
                  transport: httpx2.AsyncBaseTransport | None = None
                  ) -> AsyncIterator[ClientSession]:
    """An initialized client session (over ``transport`` if given); each refusal the
    server answered (its status and ``/v1``-shaped error code) goes to ``refusals``."""

    async def seen(response: httpx2.Response) -> None:
        if response.status_code >= 400 and refusals is not None:
            await response.aread()
            refusals.append((response.status_code, response.json()["error"]["code"]))

    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    async with (httpx2.AsyncClient(headers=headers, timeout=30, transport=transport,
                                   event_hooks={"response": [seen]}) as http,
                streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
                ClientSession(read, write) as client):
        await client.initialize()
        yield client


def test_a_key_lists_the_published_workflows_and_public_tools(site):
    secret = create_key("lister")[1]

    tools = asyncio.run(_listed(site, secret))

    assert sorted(tools) == ["mcp_test_shout", "workflow_checked", "workflow_plain"]
    plain = tools["workflow_plain"]
    assert plain.description == "The plain workflow." and plain.title == "Plain"
    assert plain.input_schema["required"] == ["message"]
    assert set(plain.input_schema["properties"]) == {"message", "conversation_id", "model",
                                                     "resume"}
    assert tools["mcp_test_shout"].input_schema == SHOUT.parameters


async def _listed(url: str, secret: str) -> dict[str, Any]:
    async with session(url, secret) as client:
        return {tool.name: tool for tool in (await client.list_tools()).tools}


def test_a_workflow_tool_runs_a_turn_and_the_conversation_goes_on(site, openai_server):
    secret = create_key("runner")[1]

    first, second = asyncio.run(_two_turns(site, secret))

    assert not first.is_error and first.content[0].text == "echo: first question"
    done = first.structured_content
    assert done["status"] == "done" and done["model"] == "recorded" and done["message_id"]
    assert second.content[0].text == "echo: second question"
    assert second.structured_content["conversation_id"] == done["conversation_id"]
    sent = [m["content"] for m in openai_server.requests[-1].body["messages"]
            if m["role"] == "user"]
    assert sent == ["first question", "second question"]  # the history was kept
    assert Message.objects.filter(conversation_id=done["conversation_id"]).count() == 4


async def _two_turns(url: str, secret: str) -> tuple[Any, Any]:
    async with session(url, secret) as client:
        first = await client.call_tool("workflow_plain", {"message": "first question"})
        second = await client.call_tool("workflow_plain", {
            "message": "second question",
            "conversation_id": first.structured_content["conversation_id"]})
        return first, second


def test_an_approval_answers_waiting_and_a_resume_call_approves(site):
    secret = create_key("approver")[1]

    waiting, resumed = asyncio.run(_approved(site, secret))

    stop = waiting.structured_content
    assert not waiting.is_error and stop["status"] == "waiting" and stop["run_id"]
    assert stop["interrupts"][0]["value"]["reply"] == "echo: may I"
    assert stop["resume"]["tool"] == "workflow_checked"
    assert resumed.content[0].text == "echo: may I"
    assert resumed.structured_content["status"] == "done"
    assert resumed.structured_content["conversation_id"] == stop["conversation_id"]


async def _approved(url: str, secret: str) -> tuple[Any, Any]:
    async with session(url, secret) as client:
        waiting = await client.call_tool("workflow_checked", {"message": "may I"})
        resumed = await client.call_tool(
            "workflow_checked", waiting.structured_content["resume"]["arguments"])
        return waiting, resumed


def test_a_public_builtin_is_called_and_its_errors_are_tool_errors(site):
    key, secret = create_key("caller")

    shouted, failed, invalid, private = asyncio.run(_shouts(site, secret))

    assert not shouted.is_error and shouted.content[0].text.startswith('{"text": "HI"')
    assert shouted.structured_content == {"text": "HI", "user": f"key:{key.prefix}",
                                          "api_key": key.prefix}
    assert failed.is_error and failed.content[0].text == "asked to fail"
    assert invalid.is_error and "text" in invalid.content[0].text
    assert isinstance(private, MCPError) and "mcp_test_private" in private.message


async def _shouts(url: str, secret: str) -> tuple[Any, ...]:
    async with session(url, secret) as client:
        shouted = await client.call_tool("mcp_test_shout", {"text": "hi"})
        failed = await client.call_tool("mcp_test_shout", {"text": "fail"})
        invalid = await client.call_tool("mcp_test_shout", {"words": "hi"})
        try:
            private: Any = await client.call_tool("mcp_test_private", {"text": "hi"})
        except MCPError as exc:
            private = exc
        return shouted, failed, invalid, private


def test_without_a_key_the_server_answers_401_in_the_v1_shape(site):
    refusals: list[tuple[int, str]] = []

    refused = asyncio.run(_refused(site, None, refusals))
    plain = httpx.post(f"{site}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                       headers={"Authorization": "Bearer sk-nope.wrong"}, timeout=10)

    assert isinstance(refused, MCPError) and refusals == [(401, "missing_api_key")]
    assert plain.status_code == 401 and plain.headers["www-authenticate"].startswith("Bearer")
    error = plain.json()["error"]
    assert error["code"] == "invalid_api_key" and error["type"] and error["message"]


async def _refused(url: str, secret: str | None,
                   refusals: list[tuple[int, str]]) -> BaseException | None:
    """The client's error on connecting (None: it connected)."""
    found = None
    try:
        async with session(url, secret, refusals):
            pass
    except* MCPError as group:  # raised through the transport's task group
        found = group.exceptions[0]
        while isinstance(found, BaseExceptionGroup):  # nested task groups
            found = found.exceptions[0]
    return found


def test_a_key_scoped_to_another_workflow_neither_sees_nor_runs_this_one(site):
    """Scoped to ``workflow/checked``: ``workflow_plain`` is not listed, and calling it is
    refused with 403 before the MCP layer."""
    key, secret = create_key("scoped", allowed_models=["workflow/checked"])
    Tool.objects.create(name="mcp_test_granted", kind=ToolKind.BUILTIN, builtin=SHOUT.name,
                        parameters=SHOUT.parameters, public=True).api_keys.add(key)
    refusals: list[tuple[int, str]] = []

    listed, refused = asyncio.run(_scoped(site, secret, refusals))

    # its workflow, and of the public tools only the one that names it
    assert listed == ["mcp_test_granted", "workflow_checked"]
    assert isinstance(refused, MCPError)
    assert refusals == [(403, "model_not_allowed")]


async def _scoped(url: str, secret: str, refusals: list[tuple[int, str]]) -> tuple[Any, Any]:
    async with session(url, secret, refusals) as client:
        listed = sorted(tool.name for tool in (await client.list_tools()).tools)
        try:
            refused: Any = await client.call_tool("workflow_plain", {"message": "let me in"})
        except MCPError as exc:
            refused = exc
        return listed, refused


def test_a_key_with_rpm_1_is_refused_429_on_its_second_request(site):
    secret = create_key("slow", rpm_limit=1)[1]
    refusals: list[tuple[int, str]] = []
    left = 60 - time.time() % 60
    if left < 3:  # both requests in one per-minute window
        time.sleep(left + 0.05)

    first, second = asyncio.run(_twice(site, secret, refusals))

    assert first == ["mcp_test_shout", "workflow_checked", "workflow_plain"]
    assert isinstance(second, MCPError)
    assert refusals == [(429, "rate_limit_exceeded")]


async def _twice(url: str, secret: str, refusals: list[tuple[int, str]]) -> tuple[Any, Any]:
    async with session(url, secret, refusals) as client:
        first = sorted(tool.name for tool in (await client.list_tools()).tools)
        try:
            second: Any = await client.list_tools()
        except MCPError as exc:
            second = exc
        return first, second


def test_the_wire_is_stateless_json_rpc_over_post(site):
    """No handshake or session needed: one POST, one JSON answer, no ``Mcp-Session-Id``
    (any replica answers); GET (a server-to-client stream) is 405."""
    headers = {"Authorization": f"Bearer {create_key('raw')[1]}",
               "Accept": "application/json, text/event-stream"}

    called = httpx.post(f"{site}/mcp", headers=headers, timeout=30, json={
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "workflow_plain", "arguments": {"message": "straight in"}}})
    stream = httpx.get(f"{site}/mcp", headers=headers, timeout=10)

    assert called.status_code == 200 and "mcp-session-id" not in called.headers
    assert called.headers["content-type"].startswith("application/json")
    answer = called.json()
    assert answer["id"] == 7 and answer["result"]["content"][0]["text"] == "echo: straight in"
    assert stream.status_code == 405 and stream.headers["allow"] == "POST"


def test_the_high_level_client_speaks_the_2026_protocol_without_a_handshake(site):
    """``mcp.client.Client`` (mode ``auto``): ``server/discover``, then each request on
    its own with ``MCP-Protocol-Version: 2026-07-28`` — the same admission and tools."""
    secret = create_key("modern")[1]

    version, listed, called = asyncio.run(_modern(site, secret))

    assert version == "2026-07-28"
    assert sorted(listed) == ["mcp_test_shout", "workflow_checked", "workflow_plain"]
    assert called.content[0].text == "echo: modern times"
    assert called.structured_content["status"] == "done"


async def _modern(url: str, secret: str) -> tuple[Any, list[str], Any]:
    async with (httpx2.AsyncClient(headers={"Authorization": f"Bearer {secret}"},
                                   timeout=30) as http,
                Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client):
        listed = [tool.name for tool in (await client.list_tools()).tools]
        called = await client.call_tool("workflow_plain", {"message": "modern times"})
        return client.session.protocol_version, listed, called


@pytest.mark.usefixtures("no_recall", "closed_saver")
async def test_the_same_paths_served_in_this_process(rows, monkeypatch):
    """The paths above once more with the ASGI application in this process (httpx2's ASGI
    transport under the official client), so that coverage sees the server's code; the
    dummy tool is registered here directly."""
    monkeypatch.setitem(registry._registry, SHOUT.name, SHOUT)
    secret = (await sync_to_async(create_key)("in-process", rpm_limit=10))[1]
    refusals: list[tuple[int, str]] = []
    url = "http://127.0.0.1"

    async with session(url, secret, refusals, httpx2.ASGITransport(app=application)) as client:
        listed = sorted(tool.name for tool in (await client.list_tools()).tools)
        answered = await client.call_tool("workflow_plain", {"message": "in here"})
        waiting = await client.call_tool("workflow_checked", {"message": "ok?"})
        resumed = await client.call_tool("workflow_checked", {
            **waiting.structured_content["resume"]["arguments"],
            "resume": {"action": "reject", "reason": "no"}})
        shouted = await client.call_tool("mcp_test_shout", {"text": "here"})
        bad = await client.call_tool("workflow_plain", {"message": "x", "conversation_id": "7"})
        with pytest.raises(MCPError):
            await client.call_tool("workflow_retired", {"message": "anyone?"})
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=application)) as http:
        no_key = await http.post(f"{url}/mcp", json={"jsonrpc": "2.0", "id": 1,
                                                      "method": "initialize"})

    assert listed == ["mcp_test_shout", "workflow_checked", "workflow_plain"]
    assert answered.content[0].text == "echo: in here"
    assert waiting.structured_content["status"] == "waiting"
    assert resumed.is_error and resumed.structured_content["status"] == "error"
    assert shouted.structured_content["text"] == "HERE"
    assert bad.is_error and "conversation_id" in bad.content[0].text
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "missing_api_key"
    assert refusals == []
