"""Node types' config schemas: every type declares a complete, valid JSON Schema (draft
2020-12) with translatable titles, and validation refuses what it refuses — a wrong
type, a value out of bounds, a misspelt key — with a sentence naming the node and the
field, located at the node (as the editor's API shows it) and the same for the admin.
The cases are generated from each type's own schema, so a new property is tested too."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils.functional import Promise
from django.utils.translation import override
from jsonschema import Draft202012Validator

from chat.models import Workflow
from chat.workflows.registry import describe, node_types, schema_for
from chat.workflows.validation import Problem, located_problems, problems

# A valid config with as few keys as each type allows (routers go to "done").
MINIMAL: dict[str, dict[str, Any]] = {
    "memory_recall": {}, "plugin": {}, "route": {}, "llm": {}, "memory_write": {},
    "condition": {"when": {}, "then": "done", "else": "done"},
    "router": {"routes": [{"when": {}, "to": "done"}], "default": "done"},
    "annotation_reply": {"matched": "done", "otherwise": "done"},
    "http_tool": {"url": "https://tools.internal/x"},
    "human_approval": {}, "sub_workflow": {"workflow": "inner"}, "end": {}, "agent": {},
}
# Every key, set (the factories' defaults are not enough to prove a full config passes).
FULL: dict[str, dict[str, Any]] = {
    "memory_recall": {"long_term": False}, "plugin": {"phase": "post"},
    "llm": {"model": "echo", "prompt": "Be brief, {{ user }}.", "output": "draft"},
    "condition": {"when": {"field": "content", "op": "contains", "value": "x"},
                  "then": "done", "else": "done", "subject": "reply"},
    "router": {"routes": [{"when": {}, "to": "done"}], "default": "done",
               "subject": "message"},
    "http_tool": {"url": "https://tools.internal/x", "method": "POST", "timeout_s": 2.5,
                  "output": "fetched"},
    "human_approval": {"prompt": "Send it?"},
    "agent": {"model": "echo", "prompt": "Use tools.", "tools": ["clock"], "max_steps": 3,
              "parallel_tool_calls": False, "approval": ["clock"], "output": "found"},
}
WRONG_TYPED: tuple[Any, ...] = (12345, "text", True, [], {})
JSON_TYPES = {"string": str, "boolean": bool, "array": list, "object": dict}


@pytest.fixture(autouse=True)
def allowed_hosts(settings):
    settings.OPENCLAW_WORKFLOW_HTTP_HOSTS = ["tools.internal"]


def lookup(slug: str) -> dict | None:
    return {"nodes": [{"id": "x", "type": "end"}]} if slug == "inner" else None


def definition_with(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """Node "n" of type ``kind`` with ``config``, going on to an end node "done"."""
    node_type = node_types()[kind]
    nodes = [{"id": "n", "type": kind, "config": config}]
    if node_type.terminal:
        return {"nodes": nodes, "edges": []}
    edges = [] if node_type.router else [{"source": "n", "target": "done"}]
    return {"nodes": [*nodes, {"id": "done", "type": "end"}], "edges": edges}


def refusals(kind: str, config: dict[str, Any]) -> list[Problem]:
    return located_problems(definition_with(kind, config), slug="outer", lookup=lookup)


def walk(schema: dict[str, Any], path: tuple = ()) -> list[tuple[tuple, dict]]:
    """Every property of an object schema, with the items' properties of its lists."""
    found = []
    for key, sub in schema.get("properties", {}).items():
        found.append(((*path, key), sub))
        items = sub.get("items", {})
        if items.get("type") == "object":
            found += walk(items, (*path, key, 0))
    return found


def field_name(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def with_value(config: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    """A deep copy of ``config`` with ``value`` at ``path``."""
    copy = json.loads(json.dumps(config))
    holder = copy
    for part in path[:-1]:
        holder = holder[part]
    holder[path[-1]] = value
    return copy


def allows(schema: dict[str, Any], value: Any) -> bool:
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    for kind in types:
        if kind in ("integer", "number"):
            if isinstance(value, int | float) and not isinstance(value, bool):
                return True
        elif isinstance(value, JSON_TYPES[kind]):
            return True
    return False


def out_of_bounds(schema: dict[str, Any]) -> list[Any]:
    """Values of the right type the schema still refuses."""
    values: list[Any] = []
    if "enum" in schema:
        values.append("not-an-option")
    if "minimum" in schema:
        values.append(schema["minimum"] - 1)
    if "exclusiveMinimum" in schema:
        values.append(schema["exclusiveMinimum"])
    if "maximum" in schema:
        values.append(schema["maximum"] + 1)
    if schema.get("minLength"):
        values.append("")
    if "pattern" in schema:
        values.append("has a space")
    if schema.get("minItems"):
        values.append([])
    if schema.get("uniqueItems") and schema.get("items", {}).get("type") == "string":
        values.append(["same", "same"])
    return values


def cases() -> list[tuple[str, tuple, Any]]:
    """(type, property path, a refused value) for every property of every type."""
    found = []
    for kind, node_type in sorted(node_types().items()):
        for path, sub in walk(node_type.schema):
            wrong = next(value for value in WRONG_TYPED if not allows(sub, value))
            found += [(kind, path, wrong), *((kind, path, v) for v in out_of_bounds(sub))]
    return found


# --- the schemas -----------------------------------------------------------------------


def test_every_node_type_has_a_minimal_and_a_full_config_here():
    assert set(MINIMAL) == set(node_types())
    for kind, node_type in node_types().items():  # every key of the type is set once
        assert set(FULL.get(kind, MINIMAL[kind])) == set(node_type.schema["properties"]), kind


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_schema_is_a_valid_draft_2020_12_schema_with_every_field_described(kind):
    node_type = node_types()[kind]

    rendered = schema_for(node_type)

    Draft202012Validator.check_schema(rendered)
    assert rendered["type"] == "object" and "additionalProperties" in rendered
    for path, sub in walk(node_type.schema):
        # lazy: rendered in the language of each request once the lead translates them
        assert isinstance(sub["title"], Promise) and isinstance(sub["description"], Promise)
        assert str(sub["title"]) and str(sub["description"]), path
    assert schema_for(kind) == rendered  # by name too


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_label_and_description_are_translatable_sentences(kind):
    node_type = node_types()[kind]

    assert isinstance(node_type.label, Promise) and isinstance(node_type.description, Promise)
    with override("en"):
        assert str(node_type.label) and len(str(node_type.description).split()) >= 6
        assert str(node_type.description).endswith(".")
    with override("zh-hans"):
        assert str(node_type.label) and str(node_type.description)


def test_schemas_and_descriptions_render_as_json_in_each_language():
    for language in ("en", "zh-hans"):
        with override(language):
            text = json.dumps([describe(node_type) for node_type in node_types().values()])

        described = {item["type"]: item for item in json.loads(text)}
        assert described["router"]["router"] and described["condition"]["router"]
        assert described["end"]["terminal"] and not described["llm"]["router"]
        routes = described["router"]["schema"]["properties"]["routes"]
        assert routes["items"]["properties"]["to"]["x-node-ref"] is True


def test_references_carry_the_editor_extensions():
    def prop(kind: str, key: str) -> dict:
        return node_types()[kind].schema["properties"][key]

    assert all(prop("condition", key)["x-node-ref"] for key in ("then", "else"))
    assert all(prop("annotation_reply", key)["x-node-ref"] for key in ("matched", "otherwise"))
    assert prop("router", "default")["x-node-ref"]
    assert prop("agent", "tools")["x-tool-ref"] and prop("agent", "approval")["x-tool-ref"]
    assert prop("sub_workflow", "workflow")["x-workflow-ref"]
    assert prop("llm", "model")["x-model-ref"] and prop("agent", "model")["x-model-ref"]
    assert prop("llm", "prompt")["format"] == "textarea"


# --- validation against them -----------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_minimal_and_full_configs_pass(kind):
    assert refusals(kind, MINIMAL[kind]) == []
    assert refusals(kind, FULL.get(kind, MINIMAL[kind])) == []


@pytest.mark.parametrize(("kind", "path", "value"), cases(),
                         ids=lambda case: json.dumps(case) if not isinstance(case, str) else case)
def test_a_refused_value_is_refused_naming_the_node_and_the_field(kind, path, value):
    # given the type's full config (or minimal) with one value its schema refuses
    config = with_value(FULL.get(kind, MINIMAL[kind]), path, value)

    # when the definition is validated
    found = refusals(kind, config)

    # then one problem, at the node, names the node and the field
    assert len(found) == 1, found
    assert found[0].node == "n"
    assert found[0].message.startswith(f"node “n” ({kind}): “{field_name(path)}”")


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_an_unknown_key_is_refused_where_the_schema_closes_the_config(kind):
    config = {**MINIMAL[kind], "temprature": 0.5}

    found = refusals(kind, config)

    assert node_types()[kind].schema["additionalProperties"] is False
    assert [problem.node for problem in found] == ["n"]
    assert "“temprature” is not a setting" in found[0].message


def test_messages_say_what_is_expected():
    def said(kind: str, **config: Any) -> list[str]:
        return [problem.message for problem in refusals(kind, {**MINIMAL[kind], **config})]

    assert said("agent", max_steps=0) == [
        "node “n” (agent): “max_steps” must be a whole number from 1 to 50."]
    assert said("http_tool", timeout_s=31) == [
        "node “n” (http_tool): “timeout_s” must be a number greater than 0 and at most 30."]
    assert said("plugin", phase="during") == [
        "node “n” (plugin): “phase” must be one of “pre”, “post”."]
    assert said("memory_recall", long_term="yes") == [
        "node “n” (memory_recall): “long_term” must be true or false."]
    assert said("end", next="x") == [
        "node “n” (end): “next” is not a setting: this node takes none."]
    assert said("llm", temperature=1) == ["node “n” (llm): “temperature” is not a setting "
                                          "here (known: model, prompt, output)."]
    assert said("router", routes=[{"when": {}}]) == [
        "node “n” (router): “routes[0]” lacks to."]


def test_missing_keys_keep_their_message_and_the_check_runs_once_the_schema_holds():
    # a condition without its branches: the schema's required, said as before (no crash
    # reading the branches of a config that lacks them)
    assert problems(definition_with("condition", {"when": {}})) == [
        "node “n” (condition): “config” lacks then, else."]
    # the schema holds: the type's check says what a schema cannot
    assert problems(definition_with("llm", {"output": "reply"})) == [
        "node “n” (llm): “output” must not be “reply” or “message”; leave it out to "
        "make the answer the reply."]
    bad_url = refusals("http_tool", {"url": "https://elsewhere.example/"})
    assert bad_url[0].node == "n" and "tools.internal" in bad_url[0].message


# --- where problems are --------------------------------------------------------------------


def test_edge_and_entry_problems_are_located():
    # given an end node with an edge out, an edge from a missing node and one to it
    definition = {"entry": "start", "nodes": [
        {"id": "start", "type": "llm"}, {"id": "stop", "type": "end"}],
        "edges": [{"source": "start", "target": "stop"}, {"source": "stop", "target": "start"},
                  {"source": "ghost", "target": "stop"}, {"source": "start", "target": "void"}]}

    found = located_problems(definition)

    assert [problem.node for problem in found] == ["stop", None, "start"]
    assert "ends the run" in found[0].message and "“ghost”" in found[1].message
    assert "“void”" in found[2].message
    assert problems(definition) == [problem.message for problem in found]
    # an entry naming no node is about the whole definition
    assert located_problems({**definition, "entry": "nowhere", "edges": []}) == [
        Problem(None, "“entry” names no node: “nowhere”.")]


def test_graph_problems_are_located_at_their_nodes():
    definition = {"nodes": [
        {"id": "start", "type": "llm"}, {"id": "island", "type": "memory_write"},
        {"id": "ping", "type": "route"}, {"id": "pong", "type": "route"},
        {"id": "ask", "type": "condition",
         "config": {"when": {}, "then": "start", "else": "nowhere"}}],
        "edges": [{"source": "start", "target": "ping"}, {"source": "ping", "target": "pong"},
                  {"source": "pong", "target": "ping"}, {"source": "ask", "target": "start"}]}

    found = located_problems(definition)

    assert [(problem.node, problem.message.split(" ")[-1]) for problem in found] == [
        ("ask", "node."), ("ask", "edges.")]
    del definition["nodes"][4]
    definition["edges"].pop()
    assert [problem.node for problem in located_problems(definition)] == ["island", "ping"]
    bad_ids = located_problems({"nodes": [{"id": "begin", "type": "end"}, {"type": "end"}]})
    assert [problem.node for problem in bad_ids] == ["begin", None]


def test_the_admin_refuses_with_the_same_messages(db):
    definition = definition_with("agent", {"max_steps": "many", "tool": ["clock"]})
    flow = Workflow(slug="schemas", name="schemas", definition=definition)

    with pytest.raises(ValidationError) as caught:
        flow.full_clean()

    assert caught.value.message_dict["definition"] == problems(definition) == [
        "node “n” (agent): “tool” is not a setting here (known: model, prompt, tools, "
        "max_steps, parallel_tool_calls, approval, output).",
        "node “n” (agent): “max_steps” must be a whole number from 1 to 50."]
