"""The agent loop's own cost, and an MCP tool call through OpenClaw against the same call
from the official ``mcp`` client. Prints the figures; writes bench/results/agent.json.

    python bench/agent.py [--turns 200] [--rounds 4] [--calls 300]

In-process, on the embedded PostgreSQL and Redis (a temporary data folder), with the
default checkpoint durability (``OPENCLAW_GRAPH_DURABILITY``):

* **Agent overhead per tool step.** The model is the loopback OpenAI server
  (tests/openai_server.py; given tools and a user message it calls one, given the
  tool's answer it replies). Two workflows of one ``agent`` node: one offering no tool
  (one model call per turn) and one offering a built-in that returns at once (two
  model calls and one tool call per turn: one tool step). Turns of each alternate in
  ``--rounds`` blocks. The model's time is measured the same way, straight from the
  backend: the bodies the agent sent, replayed with the same HTTP client. The step's
  overhead is the difference of the turns minus the difference of the model calls
  minus the tool's own time (as the tool reports it) — what the loop adds: the
  subgraph, the tool node, the events, the messages and the checkpoint writes.
* **MCP call added.** The demo MCP server (tests/mcp_servers/demo_server.py, a
  separate process, Streamable HTTP on loopback) registered as an MCP server; its
  ``add`` tool called ``--calls`` times through ``chat.tools.service.acall`` (schema
  check, timeout, OpenClaw's pooled session) and as many times from a ``ClientSession``
  held open by this process, alternating; the added p50 is the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from bench.gateway import free_port, stop  # noqa: E402
from bench.stats import latency_summary  # noqa: E402

RESULTS = REPO / "bench" / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="ocagent-"))
    os.environ.update(OPENCLAW_DATA_DIR=str(data),
                      DJANGO_SETTINGS_MODULE="openclaw_site.settings",
                      OPENCLAW_LOG_LEVEL="WARNING", OPENCLAW_MEMORY_TOP_K="0")
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    from openclaw_site.cli import load_settings
    from openclaw_site.embedded import embedded_services

    settings_module = load_settings()
    try:
        with embedded_services(settings_module):
            results = run(data, args)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    print(json.dumps(results, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "agent.json").write_text(json.dumps(results, indent=2))
    print(f"written {RESULTS / 'agent.json'}")


def run(data: Path, args: argparse.Namespace) -> dict:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from tests.openai_server import OpenAIServer

    with OpenAIServer() as backend:
        results = asyncio.run(agent_overhead(backend, args.turns, args.rounds))
    results["mcp"] = mcp_added(data, args.calls)
    return results


# --- the agent loop ------------------------------------------------------------------------


async def _instant(arguments: dict, context) -> str:
    return "ok"


def _setup(backend_url: str) -> None:
    from chat.models import Tool, ToolKind, Workflow
    from chat.tools import registry
    from routing.models import ModelEndpoint

    registry.add(registry.BuiltinTool("instant", "Answers at once.",
                                      {"type": "object", "properties": {}}, _instant))
    Tool.objects.create(name="instant", kind=ToolKind.BUILTIN, builtin="instant",
                        description="Answers at once.")
    ModelEndpoint.objects.create(name="looped", engine="openai", upstream_model="echo",
                                 endpoint_url=backend_url)
    for slug, config in (("plain", {"tools": []}), ("one-step", {"tools": ["instant"]})):
        Workflow.objects.create(slug=slug, name=slug, default_model="looped", definition={
            "nodes": [{"id": "agent", "type": "agent", "config": config}], "edges": []})


async def _turn(slug: str, conversation: str | None, tool_ms: list[float]) -> tuple[float, str]:
    from chat.graph.service import astream_turn

    started = time.perf_counter()
    async for event in astream_turn(conversation_id=conversation, user="bench",
                                    content="hello there", model="looped", workflow=slug):
        if event["type"] == "conversation":
            conversation = event["id"]
        elif event["type"] == "tool_result":
            tool_ms.append(event["duration_ms"])
        elif event["type"] == "error":
            raise RuntimeError(event)
    assert conversation is not None
    return (time.perf_counter() - started) * 1000, conversation


async def _replay(client: httpx.AsyncClient, url: str, body: dict) -> float:
    started = time.perf_counter()
    async with client.stream("POST", f"{url}/chat/completions", json=body) as response:
        async for _ in response.aiter_raw():
            pass
    return (time.perf_counter() - started) * 1000


async def agent_overhead(backend, turns: int, rounds: int) -> dict:
    from asgiref.sync import sync_to_async

    await sync_to_async(_setup)(backend.url)
    per_round = max(1, turns // rounds)
    times: dict[str, list[float]] = {"plain": [], "one-step": []}
    tool_ms: list[float] = []
    conversations: dict[str, str | None] = {"plain": None, "one-step": None}
    for slug in times:  # warm-up: compile, connections, the first checkpoint
        for _ in range(10):
            _, conversations[slug] = await _turn(slug, conversations[slug], [])
    for _ in range(rounds):
        for slug in times:
            for _ in range(per_round):
                took, conversations[slug] = await _turn(slug, conversations[slug], tool_ms)
                times[slug].append(took)
    # The model calls of one turn of each, replayed straight to the backend.
    backend.reset()
    await _turn("one-step", None, [])
    step_bodies = [request.body for request in backend.requests]
    backend.reset()
    await _turn("plain", None, [])
    plain_bodies = [request.body for request in backend.requests]
    model: dict[str, list[float]] = {"plain": [], "one-step": []}
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(rounds):
            for _ in range(per_round):
                model["one-step"].append(sum([await _replay(client, backend.url, body)
                                              for body in step_bodies]))
                model["plain"].append(sum([await _replay(client, backend.url, body)
                                           for body in plain_bodies]))
    turns_ms = {slug: latency_summary(values) for slug, values in times.items()}
    model_ms = {slug: latency_summary(values) for slug, values in model.items()}
    tool = latency_summary(tool_ms)
    overhead = (turns_ms["one-step"]["p50_ms"] - turns_ms["plain"]["p50_ms"]
                - (model_ms["one-step"]["p50_ms"] - model_ms["plain"]["p50_ms"])
                - tool["p50_ms"])
    return {"durability": os.environ.get("OPENCLAW_GRAPH_DURABILITY", "exit (default)"),
            "turn_ms": turns_ms, "model_calls_ms": model_ms, "tool_ms": tool,
            "model_calls_per_turn": {"plain": len(plain_bodies),
                                     "one-step": len(step_bodies)},
            "agent_overhead_per_tool_step_p50_ms": round(overhead, 2)}


# --- MCP ----------------------------------------------------------------------------------


def wait_port(port: int, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the demo MCP server did not start") from None
            time.sleep(0.1)


def mcp_added(data: Path, calls: int) -> dict:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.mcp_servers.demo_server", "--transport",
         "streamable-http", "--port", str(port)], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=(data / "mcp.log").open("w"),
        start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        wait_port(port, server, 30)
        return asyncio.run(_mcp_calls(url, calls))
    finally:
        stop(server)


async def _mcp_calls(url: str, calls: int) -> dict:
    from asgiref.sync import sync_to_async
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    from chat.models import McpServer, Tool
    from chat.tools.mcp_client import refresh
    from chat.tools.registry import ToolContext
    from chat.tools.service import acall, spec_of

    server = await sync_to_async(McpServer.objects.create)(name="demo", url=url)
    await sync_to_async(refresh)(server.pk)
    row = await sync_to_async(Tool.objects.select_related("workflow").get)(name="demo__add")
    spec = spec_of(row)
    context = ToolContext(user="bench")
    through, direct = [], []
    async with streamable_http_client(url) as (read, write, *_), \
            ClientSession(read, write) as session:
        await session.initialize()
        for i in range(calls + 20):
            started = time.perf_counter()
            result = await acall(spec, {"a": i, "b": 1}, context)
            took_through = (time.perf_counter() - started) * 1000
            assert not result.is_error, result.content
            started = time.perf_counter()
            answer = await session.call_tool("add", {"a": i, "b": 1})
            took_direct = (time.perf_counter() - started) * 1000
            assert not answer.is_error
            if i >= 20:  # warm-up excluded
                through.append(took_through)
                direct.append(took_direct)
    through_s, direct_s = latency_summary(through), latency_summary(direct)
    return {"through_openclaw": through_s, "mcp_client_direct": direct_s,
            "added_p50_ms": round(through_s["p50_ms"] - direct_s["p50_ms"], 2)}


if __name__ == "__main__":
    main()
