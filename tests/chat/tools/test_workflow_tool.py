"""A workflow as a tool, run end to end on the real PostgreSQL checkpoints and Redis with
the echo engine: the answer is the result, a run that stops at a human-approval node
answers at once that it waits (conversation and run named), a run's error is the
model's, and a call from inside another graph's node runs on its own (the caller's
graph is not interrupted, its stream and callbacks hear nothing of the inner run)."""

from __future__ import annotations

import json
from typing import Any, TypedDict

import pytest
from asgiref.sync import sync_to_async
from langchain_core.callbacks import AsyncCallbackHandler
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from chat.models import Conversation, Message, RunStatus, Tool, ToolKind, Workflow, WorkflowRun
from chat.tools.registry import ToolContext
from chat.tools.service import ToolResult, acall, spec_of
from chat.tools.workflow_tool import WORKFLOW_PARAMETERS
from routing.models import ModelEndpoint

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("no_recall", "closed_saver")]

ANN = ToolContext(user="ann")


def node(node_id: str, kind: str, **config) -> dict:
    return {"id": node_id, "type": kind, "config": config}


def workflow(slug: str, nodes: list[dict], edges: list[tuple[str, str]] = (),
             **fields) -> Workflow:
    fields.setdefault("default_model", "echo")
    made = Workflow(slug=slug, name=slug, definition={
        "entry": nodes[0]["id"], "nodes": nodes,
        "edges": [{"source": s, "target": t} for s, t in edges]}, **fields)
    made.full_clean()
    made.save()
    return made


def workflow_tool(name: str, flow: Workflow, parameters: dict | None = None) -> Any:
    made = Tool.objects.create(name=name, kind=ToolKind.WORKFLOW, workflow=flow,
                               parameters=parameters or WORKFLOW_PARAMETERS, timeout_s=60)
    return spec_of(Tool.objects.select_related("workflow").get(pk=made.pk))


@pytest.fixture
def echo(db):
    ModelEndpoint.objects.create(name="echo", engine="echo")


def answering() -> Any:
    return workflow_tool("summarise", workflow("summarise", [node("answer", "llm")]))


def reviewed() -> Any:
    return workflow_tool("reviewed", workflow("reviewed", [
        node("answer", "llm"),
        node("review", "human_approval", prompt="Send this answer?"),
        node("store", "memory_write"),
    ], [("answer", "review"), ("review", "store")]))


async def test_a_workflow_tool_runs_the_workflow_and_answers(echo):
    spec = await sync_to_async(answering)()

    result = await acall(spec, {"message": "three bullet points, please"}, ANN)

    assert not result.is_error and result.content == "three bullet points, please"
    # a turn of a new conversation of the caller, pinned to the workflow
    conversation = await Conversation.objects.select_related("workflow").aget(user="ann")
    assert conversation.workflow.slug == "summarise"
    assert [m.content async for m in Message.objects.filter(conversation=conversation)] == [
        "three bullet points, please"]


async def test_a_workflow_tool_with_its_own_schema_sends_its_arguments_as_json(echo):
    city = {"type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"]}
    spec = await sync_to_async(workflow_tool)(
        "forecast", await sync_to_async(workflow)("forecast", [node("answer", "llm")]), city)

    result = await acall(spec, {"city": "Lisbon"}, ANN)

    assert json.loads(result.content) == {"city": "Lisbon"}


async def test_a_run_waiting_for_approval_answers_at_once_that_it_waits(echo):
    spec = await sync_to_async(reviewed)()

    result = await acall(spec, {"message": "refund order 42"}, ANN)

    assert not result.is_error
    waiting = result.value
    run = await WorkflowRun.objects.aget(pk=waiting["run_id"])
    assert run.status == RunStatus.WAITING and str(run.conversation_id) == \
        waiting["conversation_id"]
    assert waiting["status"] == "waiting"
    assert waiting["conversation_id"] in waiting["message"]
    assert f"run {run.pk}" in waiting["message"] and "approval" in waiting["message"]


async def test_a_runs_error_or_a_missing_model_is_the_models_error(echo, settings):
    settings.OPENCLAW_WORKFLOW_HTTP_HOSTS = ["127.0.0.1"]
    fetch_flow = await sync_to_async(workflow)(
        "fetching", [node("fetch", "http_tool", url="http://127.0.0.1:1/x")])
    fetching = await sync_to_async(workflow_tool)("fetching", fetch_flow)
    settings.OPENCLAW_WORKFLOW_HTTP_HOSTS = []  # the host is no longer allowed
    modelless = await sync_to_async(workflow_tool)("modelless", await sync_to_async(
        workflow)("modelless", [node("answer", "llm")], default_model=""))

    failed = await acall(fetching, {"message": "go"}, ANN)
    no_model = await acall(modelless, {"message": "go"}, ANN)
    nobody = await acall(fetching, {"message": "go"}, ToolContext())
    fetch_flow.enabled = False
    await sync_to_async(fetch_flow.save)()  # as the admin saves it: every process hears
    disabled = await acall(fetching, {"message": "go"}, ANN)

    assert failed.is_error and failed.content == "The HTTP tool's host is no longer allowed."
    assert no_model.is_error and "“modelless” has no default model" in no_model.content
    assert nobody.is_error and "user" in nobody.content
    assert disabled.is_error and disabled.content == "No enabled workflow “fetching”."


class Recorder(AsyncCallbackHandler):
    """The runs a graph's callbacks are told of, by name."""

    def __init__(self):
        self.names: list[str] = []

    async def on_chain_start(self, serialized, inputs, **kwargs) -> None:
        self.names.append(kwargs.get("name") or "")


class Outer(TypedDict, total=False):
    result: dict


async def test_a_call_from_inside_another_graph_is_a_run_of_its_own(echo):
    # given a LangGraph graph whose node calls the tool (as an agent's tool step does)
    spec = await sync_to_async(reviewed)()

    async def call_tool(state: Outer) -> Outer:
        result: ToolResult = await acall(spec, {"message": "nested draft"}, ANN)
        return {"result": {"is_error": result.is_error, "value": result.value}}

    outer = StateGraph(Outer)
    outer.add_node("call_tool", call_tool)
    outer.add_edge(START, "call_tool")
    outer.add_edge("call_tool", END)

    # when it runs to its end
    graph = outer.compile(checkpointer=InMemorySaver())
    seen = Recorder()
    config = {"configurable": {"thread_id": "outer"}, "callbacks": [seen]}
    streamed = [item async for item in graph.astream({}, config,
                                                     stream_mode=["updates", "custom"])]
    final = (await graph.aget_state(config)).values

    # then the inner run waited for approval by itself; the outer graph was not stopped
    assert final["result"]["is_error"] is False
    assert final["result"]["value"]["status"] == "waiting"
    assert [mode for mode, _chunk in streamed] == ["updates"]  # nothing of the inner run
    assert (await graph.aget_state(config)).next == ()
    # nor did the caller's callbacks (tracing) hear of the inner run's graph or nodes
    assert seen.names == ["LangGraph", "call_tool"]
