"""The tool service on the real PostgreSQL: which tools a principal may use (nobody
listed: anyone; else the key, the user or a group of theirs; ``workflows`` limits where;
a disabled tool or MCP server takes its tools away), and one call's outcomes —
arguments that do not fit the schema, a tool that raises, one that hangs past its
timeout — each returned to the model as an error, never raised."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.contrib.auth.models import Group, User

import chat.tools.builtins  # noqa: F401  (registers the built-ins: ready() will)
from chat.models import McpServer, Tool, ToolKind, Workflow
from chat.tools import registry
from chat.tools.registry import BuiltinTool, ToolContext, ToolFailed
from chat.tools.service import ToolSpec, acall, specs_for
from routing.keys import create_key

OBJECT = {"type": "object", "properties": {"text": {"type": "string"}},
          "required": ["text"]}


def tool(name: str, **fields) -> Tool:
    fields.setdefault("kind", ToolKind.BUILTIN)
    fields.setdefault("builtin", "calculator")
    many = {field: fields.pop(field) for field in ("api_keys", "users", "groups", "workflows")
            if field in fields}
    made = Tool.objects.create(name=name, **fields)
    for field, values in many.items():
        getattr(made, field).set(values)
    return made


def names(**principal) -> list[str]:
    return [s.name for s in specs_for(MINE, **principal)]


MINE = ["t_open", "t_key", "t_user", "t_group", "t_in_flow", "t_off", "t_mcp_on",
        "t_mcp_off", "t_flow_off"]


@pytest.fixture
def tools(db):
    """One tool per rule (names above), and the principals they name."""
    key, _secret = create_key("tool-key")
    other_key, _secret = create_key("other-key")
    ann = User.objects.create(username="ann")
    bob = User.objects.create(username="bob")
    User.objects.create(username="cy")
    team = Group.objects.create(name="team")
    bob.groups.add(team)
    flow = Workflow.objects.create(slug="flow", name="flow", definition={})
    off_flow = Workflow.objects.create(slug="off-flow", name="off", definition={},
                                       enabled=False)
    server_on = McpServer.objects.create(name="on", url="http://127.0.0.1:9/mcp")
    server_off = McpServer.objects.create(name="off", url="http://127.0.0.1:9/mcp",
                                          enabled=False)
    tool("t_open")
    tool("t_key", api_keys=[key])
    tool("t_user", users=[ann])
    tool("t_group", groups=[team])
    tool("t_in_flow", workflows=[flow])
    tool("t_off", enabled=False)
    tool("t_mcp_on", kind=ToolKind.MCP, builtin="", server=server_on, remote_name="echo")
    tool("t_mcp_off", kind=ToolKind.MCP, builtin="", server=server_off, remote_name="echo")
    tool("t_flow_off", kind=ToolKind.WORKFLOW, builtin="", workflow=off_flow)
    return {"key": key.prefix, "other_key": other_key.prefix}


def test_a_tool_nobody_is_listed_for_is_everyones(tools):
    everyone = ["t_open", "t_mcp_on"]

    assert names() == everyone
    assert names(user="cy") == everyone
    assert names(api_key=tools["other_key"], user=f"key:{tools['other_key']}") == everyone


def test_a_listed_key_user_or_group_member_may_use_the_tool(tools):
    assert names(api_key=tools["key"], user=f"key:{tools['key']}") == [
        "t_open", "t_key", "t_mcp_on"]
    assert names(user="ann") == ["t_open", "t_user", "t_mcp_on"]
    assert names(user="bob") == ["t_open", "t_group", "t_mcp_on"]  # through "team"
    # a "key:" user is never a user row: a username cannot pass for a key
    assert names(user=f"key:{tools['key']}") == ["t_open", "t_mcp_on"]


def test_workflows_limit_where_a_tool_may_be_used(tools):
    assert "t_in_flow" in names(workflow="flow")
    assert "t_in_flow" not in names(workflow="other")
    assert "t_in_flow" not in names()  # outside any workflow
    assert "t_open" in names(workflow="other")


def test_disabled_tools_servers_and_workflows_take_their_tools_away(tools):
    found = names(user="ann", api_key=tools["key"], workflow="flow")

    assert {"t_off", "t_mcp_off", "t_flow_off"}.isdisjoint(found)
    Tool.objects.filter(name="t_open").update(enabled=False)
    McpServer.objects.filter(name="on").update(enabled=False)
    assert names() == []


def test_specs_keep_the_order_asked_and_the_rows_settings(tools):
    Tool.objects.filter(name="t_open").update(description="Open.", parameters=OBJECT,
                                              timeout_s=3, requires_approval=True)

    found = specs_for(["t_mcp_on", "missing", "t_open"])
    public = specs_for(None, public=True)

    assert [s.name for s in found] == ["t_mcp_on", "t_open"]
    assert found[1] == ToolSpec(name="t_open", kind="builtin", description="Open.",
                                timeout_s=3, requires_approval=True, builtin="calculator")
    assert found[1].openai() == {"type": "function", "function": {
        "name": "t_open", "description": "Open.", "parameters": OBJECT}}
    assert found[0].server is not None and found[0].remote_name == "echo"
    assert all(s.name not in MINE for s in public)  # none of them is public


# --- one call ------------------------------------------------------------------------


@pytest.fixture
def test_tools(monkeypatch):
    """Test-only built-ins, registered for one test (the registry is put back after)."""
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))

    async def shout(arguments, context):
        return {"text": arguments["text"].upper(), "for": context.user}

    async def broken(arguments, context):
        raise RuntimeError("the disk is on fire")

    async def refusing(arguments, context):
        raise ToolFailed("No such city.")

    async def hanging(arguments, context):
        await asyncio.sleep(60)

    for name, run in (("shout", shout), ("broken", broken), ("refusing", refusing),
                      ("hanging", hanging)):
        registry.add(BuiltinTool(name, f"{name} for tests", OBJECT, run))


def builtin(name: str, **fields) -> ToolSpec:
    return ToolSpec(name=name, kind="builtin", builtin=name, parameters=OBJECT, **fields)


async def test_a_call_runs_the_tool_with_its_context(test_tools):
    result = await acall(builtin("shout"), {"text": "hi"}, ToolContext(user="ann"))

    assert not result.is_error and result.value == {"text": "HI", "for": "ann"}
    assert result.content == '{"text": "HI", "for": "ann"}' and result.duration_ms >= 0


@pytest.mark.parametrize(("arguments", "says"), [
    ({}, "Invalid arguments: 'text' is a required property"),
    ({"text": 5}, "Invalid arguments (text): 5 is not of type 'string'"),
    (["hi"], "The arguments must be a JSON object."),
])
async def test_arguments_that_do_not_fit_the_schema_are_the_models_error(test_tools,
                                                                       arguments, says):
    result = await acall(builtin("shout"), arguments, ToolContext())

    assert result.is_error and result.content == says


async def test_a_tool_that_raises_gives_its_error_to_the_model(test_tools):
    broken = await acall(builtin("broken"), {"text": "x"}, ToolContext())
    refusing = await acall(builtin("refusing"), {"text": "x"}, ToolContext())

    assert broken.is_error
    assert broken.content == "The tool “broken” failed: RuntimeError: the disk is on fire"
    assert refusing.is_error and refusing.content == "No such city."


async def test_a_tool_that_hangs_is_stopped_at_its_timeout(test_tools):
    started = time.perf_counter()

    result = await acall(builtin("hanging", timeout_s=0.2), {"text": "x"}, ToolContext())

    assert result.is_error and result.content == \
        "The tool “hanging” did not answer within 0.2 s."
    assert 0.2 <= time.perf_counter() - started < 2 and result.duration_ms >= 200


async def test_a_missing_built_in_or_unknown_kind_is_an_error_not_a_crash(test_tools):
    missing = await acall(builtin("uninstalled"), {"text": "x"}, ToolContext())
    unknown = await acall(ToolSpec(name="odd", kind="telepathy"), {}, ToolContext())

    assert missing.is_error and "“uninstalled” is not installed" in missing.content
    assert unknown.is_error and "“telepathy”" in unknown.content
