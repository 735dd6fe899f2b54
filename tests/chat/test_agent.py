"""The ``agent`` node on the real PostgreSQL (checkpoints) and Redis, with the loopback
OpenAI server as the model (it calls the tools its user message names, streamed as
OpenAI streams the fragments, and after the tool messages answers "echo: tool results:
…"): tools called concurrently, their results back to the model, a failing and a
hanging tool given to the model as errors, approval (approve, edit, reject) through the
run's interrupt, ``max_steps``, and only the tools the principal may use offered."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from chat.graph.service import astream_resume, astream_turn
from chat.models import Tool, ToolKind
from chat.tools import registry
from chat.tools.registry import BuiltinTool, ToolFailed
from routing.models import ModelEndpoint

from .test_workflows import node, workflow

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("no_recall", "closed_saver")]

SLEEP_S = 0.4
RAN: list[tuple[str, float, float]] = []  # (tool, start, end) of each call


async def _weather(arguments: dict, context: registry.ToolContext) -> dict:
    started = time.perf_counter()
    await asyncio.sleep(SLEEP_S)
    RAN.append(("weather", started, time.perf_counter()))
    return {"city": arguments.get("city"), "forecast": "sunny"}


async def _sum(arguments: dict, context: registry.ToolContext) -> str:
    started = time.perf_counter()
    await asyncio.sleep(SLEEP_S)
    RAN.append(("adder", started, time.perf_counter()))
    return str(arguments["a"] + arguments["b"])


async def _broken(arguments: dict, context: registry.ToolContext) -> str:
    raise ToolFailed("the broken tool is broken")


async def _hang(arguments: dict, context: registry.ToolContext) -> str:
    await asyncio.sleep(60)
    return "never"


def _schema(**properties: str) -> dict:
    return {"type": "object", "properties": {name: {"type": kind}
                                             for name, kind in properties.items()},
            "required": list(properties)}


TEST_TOOLS = {
    "weather": BuiltinTool("weather", "Today's weather in a city.", _schema(city="string"),
                           _weather),
    "adder": BuiltinTool("adder", "The sum of two integers.", _schema(a="integer",
                                                                      b="integer"), _sum),
    "broken": BuiltinTool("broken", "Always fails.", _schema(), _broken),
    "hang": BuiltinTool("hang", "Never answers.", _schema(), _hang),
}


@pytest.fixture
def tools(db, monkeypatch, openai_server):
    """The test tools registered and configured (rows), and the loopback model."""
    monkeypatch.setattr(registry, "_registry", {**registry._registry, **TEST_TOOLS})
    ModelEndpoint.objects.create(name="looped", engine="openai", upstream_model="echo",
                                 endpoint_url=openai_server.url)
    for tool in TEST_TOOLS.values():
        Tool.objects.create(name=tool.name, kind=ToolKind.BUILTIN, builtin=tool.name,
                            description=tool.description, parameters=tool.parameters,
                            timeout_s=0.5 if tool.name == "hang" else 5)
    return openai_server


def agent_workflow(slug: str = "agentic", **config) -> None:
    workflow(slug, [node("agent", "agent", **config)], default_model="looped")


async def run(message: str, slug: str = "agentic", **kwargs) -> list[dict]:
    return [event async for event in astream_turn(
        conversation_id=kwargs.pop("conversation_id", None), user="alice", content=message,
        model="looped", workflow=slug, **kwargs)]


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [event for event in events if event["type"] == kind]


async def test_two_tools_run_concurrently_and_the_model_answers_from_them(tools):
    await sync_to_async(agent_workflow)(tools=["weather", "adder"])
    RAN.clear()
    events = await run("use weather and adder for Paris")
    calls, results = of_type(events, "tool_call"), of_type(events, "tool_result")
    assert sorted(call["name"] for call in calls) == ["adder", "weather"]
    assert all(call["step"] == 1 and call["node"] == "agent" for call in calls)
    assert {result["id"] for result in results} == {call["id"] for call in calls}
    assert all(result["status"] == "ok" for result in results)
    done = events[-1]
    assert done["type"] == "done"
    assert done["content"].startswith("echo: tool results:")
    assert "sunny" in done["content"]
    # The two calls ran at once: each started before the other ended.
    (_, start_a, end_a), (_, start_b, end_b) = RAN
    assert start_a < end_b and start_b < end_a, RAN
    assert max(r["duration_ms"] for r in results) >= SLEEP_S * 1000
    # The answer streamed as tokens, joined into the stored reply.
    assert "".join(e["text"] for e in of_type(events, "token")) == done["content"]
    tools.reset()


async def test_a_failing_and_a_hanging_tool_are_the_models_to_hear_about(tools):
    await sync_to_async(agent_workflow)(tools=["broken", "hang"])
    events = await run("call broken and hang")
    results = {r["name"]: r for r in of_type(events, "tool_result")}
    assert results["broken"]["status"] == "error"
    assert "the broken tool is broken" in results["broken"]["content"]
    assert results["hang"]["status"] == "error"
    assert "0.5" in results["hang"]["content"]
    assert events[-1]["type"] == "done"
    assert "broken" in events[-1]["content"]


async def test_unknown_or_unlisted_tools_are_not_offered(tools):
    await sync_to_async(agent_workflow)(tools=["weather", "no_such_tool"])
    await sync_to_async(Tool.objects.filter(name="weather").update)(enabled=False)
    events = await run("use weather now")
    assert of_type(events, "tool_call") == []
    assert events[-1]["type"] == "done"
    body = tools.requests[-1].body
    assert "tools" not in body


async def test_max_steps_makes_the_last_call_answer_without_tools(tools):
    await sync_to_async(agent_workflow)(tools=["weather"], max_steps=1)
    events = await run("use weather")
    assert of_type(events, "tool_call") == []
    assert tools.requests[-1].body["tool_choice"] == "none"
    assert events[-1]["type"] == "done"


async def _waiting(message: str) -> tuple[str, dict]:
    events = await run(message)
    waiting = events[-1]
    assert waiting["type"] == "waiting", waiting
    conversation = next(e["id"] for e in events if e["type"] == "conversation")
    return conversation, waiting


async def resume(conversation: str, value) -> list[dict]:
    return [event async for event in astream_resume(conversation_id=conversation,
                                                    user="alice", resume=value)]


async def test_a_call_that_needs_approval_waits_and_runs_once_approved(tools):
    await sync_to_async(agent_workflow)(tools=["weather", "adder"], approval=["weather"])
    conversation, waiting = await _waiting("use weather for Oslo")
    interrupt = waiting["interrupts"][0]["value"]
    assert interrupt["kind"] == "tool_approval"
    assert [call["name"] for call in interrupt["tool_calls"]] == ["weather"]
    events = await resume(conversation, {"action": "approve"})
    assert of_type(events, "approval")[0]["action"] == "approve"
    assert of_type(events, "tool_result")[0]["status"] == "ok"
    assert events[-1]["type"] == "done" and "sunny" in events[-1]["content"]


async def test_an_edit_changes_the_arguments_and_a_rejection_tells_the_model(tools):
    await sync_to_async(agent_workflow)(tools=["adder"], approval=["adder"])
    conversation, waiting = await _waiting("use adder please")
    events = await resume(conversation, {"action": "edit", "arguments": {"a": 40, "b": 2}})
    assert of_type(events, "tool_result")[0]["content"] == "42"
    assert "42" in events[-1]["content"]

    conversation, waiting = await _waiting("use adder again")
    events = await resume(conversation, {"action": "reject", "reason": "not today"})
    assert of_type(events, "tool_result") == []
    assert events[-1]["type"] == "done"
    assert "not today" in events[-1]["content"]


async def test_without_tools_of_its_own_the_agent_offers_the_users_tools(tools):
    await sync_to_async(agent_workflow)()
    events = await run("use weather in Rome", tools=["weather"])
    assert [call["name"] for call in of_type(events, "tool_call")] == ["weather"]
    events = await run("plain hello")
    assert of_type(events, "tool_call") == []
