"""An agent workflow end to end over ``/v1`` with the official ``openai`` SDK, against the
live web server: the model (the loopback OpenAI server) calls two tools of a real MCP
server (the official SDK's, a process of its own on loopback, Streamable HTTP with a
bearer token) and a built-in at once, hears their results and answers; the steps come
to the client as ``x_openclaw`` fields it may ignore (streamed: chunks with an empty
delta; whole: ``x_openclaw.steps``); a call that needs approval waits
(``finish_reason: "interrupted"``) and ``metadata.resume`` approves it; an MCP server
that is down fails its tools, not the run."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from chat.models import McpServer, Tool, Workflow
from chat.tools import mcp_client
from routing.keys import create_key
from routing.models import ModelEndpoint
from tests.mcp_servers import TOKEN, DemoServer

pytestmark = pytest.mark.django_db(transaction=True)

TOOLS = ["demo__add", "demo__weather", "calculator"]
ASK = "use demo__add and demo__weather and calculator for 2 and 3"


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory) -> Iterator[DemoServer]:
    server = DemoServer("streamable-http", tmp_path_factory.mktemp("mcp") / "e2e.log").start()
    yield server
    server.stop()


@pytest.fixture
def sdk(live_server_url, openai_server, mcp_server) -> openai.OpenAI:
    """A key, the loopback model, the demo MCP server's tools discovered, and two agent
    workflows over them (one asks before the weather is looked up)."""
    ModelEndpoint.objects.create(name="looped", engine="openai", upstream_model="echo",
                                 endpoint_url=openai_server.url)
    server = McpServer.objects.create(name="demo", url=mcp_server.url,
                                      headers={"Authorization": f"Bearer {TOKEN}"})
    found = mcp_client.refresh(server.pk)
    assert Tool.objects.filter(name__in=TOOLS).count() == 3, found
    for slug, config in (("helper", {"tools": TOOLS}),
                         ("careful", {"tools": TOOLS, "approval": ["demo__weather"]})):
        Workflow.objects.create(slug=slug, name=slug, default_model="looped", definition={
            "nodes": [{"id": "agent", "type": "agent", "config": config}], "edges": []})
    return openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=create_key("agent")[1],
                         max_retries=0, timeout=60)


def by_name(steps: list[dict], kind: str) -> dict[str, dict]:
    return {step["name"]: step for step in steps if step["type"] == kind}


def test_two_mcp_tools_and_a_built_in_in_one_step_then_the_answer(sdk):
    completion = sdk.chat.completions.create(
        model="workflow/helper", messages=[{"role": "user", "content": ASK}])
    extension = completion.model_extra["x_openclaw"]
    assert extension["status"] == "done"
    calls, results = by_name(extension["steps"], "tool_call"), \
        by_name(extension["steps"], "tool_result")
    assert set(calls) == set(TOOLS) and {c["step"] for c in calls.values()} == {1}
    assert all(result["status"] == "ok" for result in results.values()), results
    assert "sunny" in results["demo__weather"]["content"]
    answer = completion.choices[0].message.content
    assert answer.startswith("echo: tool results:") and "sunny" in answer
    assert completion.choices[0].finish_reason == "stop"


def test_the_steps_stream_as_chunks_the_client_may_ignore(sdk):
    text, events = [], []
    for chunk in sdk.chat.completions.create(
            model="workflow/helper", messages=[{"role": "user", "content": ASK}],
            stream=True):
        extra = (chunk.model_extra or {}).get("x_openclaw") or {}
        if "event" in extra:
            assert chunk.choices[0].delta.content is None
            events.append(extra["event"])
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
    kinds = [event["type"] for event in events]
    assert kinds.count("tool_call") == 3 and kinds.count("tool_result") == 3
    assert kinds.index("tool_result") > max(i for i, k in enumerate(kinds) if k == "tool_call")
    assert "".join(text).startswith("echo: tool results:")


def test_a_call_that_needs_approval_waits_and_the_resume_runs_it(sdk):
    waiting = sdk.chat.completions.create(
        model="workflow/careful", messages=[{"role": "user", "content": ASK}])
    assert waiting.choices[0].finish_reason == "interrupted"
    extension = waiting.model_extra["x_openclaw"]
    assert extension["status"] == "waiting"
    review = extension["interrupts"][0]["value"]
    assert review["kind"] == "tool_approval"
    assert [call["name"] for call in review["tool_calls"]] == ["demo__weather"]
    assert not by_name(extension["steps"], "tool_result")  # nothing ran yet
    done = sdk.chat.completions.create(
        model="workflow/careful", messages=[{"role": "user", "content": "ok"}],
        metadata={"conversation_id": extension["conversation_id"], "resume": "approve"})
    steps = done.model_extra["x_openclaw"]["steps"]
    decisions = [step for step in steps if step["type"] == "approval"]
    assert [d["action"] for d in decisions] == ["approve"]  # then the three calls ran
    assert set(by_name(steps, "tool_result")) == set(TOOLS)
    assert "sunny" in done.choices[0].message.content


def test_an_mcp_server_that_is_down_fails_its_tools_not_the_run(sdk, mcp_server):
    mcp_server.stop()
    try:
        completion = sdk.chat.completions.create(
            model="workflow/helper", messages=[{"role": "user", "content": ASK}])
    finally:
        mcp_server.start()
    results = by_name(completion.model_extra["x_openclaw"]["steps"], "tool_result")
    assert results["demo__add"]["status"] == "error"
    assert results["demo__weather"]["status"] == "error"
    assert results["calculator"]["status"] == "ok"
    assert completion.choices[0].message.content.startswith("echo: tool results:")
