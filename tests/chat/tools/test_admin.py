"""The tool admin through Django's test client as a superuser: a workflow tool added with
the default schema, a schema that is not JSON Schema refused naming where, a workflow
with no model to run with refused, and a built-in row whose link to the code and schema
are shown, not editable."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

import chat.tools.admin  # noqa: F401  (registers the admin: chat/admin.py will)
import chat.tools.builtins  # noqa: F401  (registers the built-ins: ready() will)
from chat.models import Tool, ToolKind, Workflow
from chat.tools.sync import sync_builtin_rows
from chat.tools.workflow_tool import WORKFLOW_PARAMETERS

pytestmark = pytest.mark.django_db

FLOW = {"entry": "answer", "nodes": [{"id": "answer", "type": "llm"}], "edges": []}


def form(**fields) -> dict:
    data = {"name": "summarise", "description_en": "Summarises a text.",
            "description_zh_hans": "", "parameters": "", "enabled": "on",
            "timeout_s": "45"}
    data.update(fields)
    return data


def errors(response) -> dict:
    return response.context["adminform"].form.errors


@pytest.fixture
def flow(db) -> Workflow:
    return Workflow.objects.create(slug="summary", name="summary", definition=FLOW,
                                   default_model="echo")


def test_a_workflow_tool_is_added_with_the_default_schema(admin_client, flow):
    response = admin_client.post(reverse("admin:chat_tool_add"),
                                 form(workflow=flow.pk, requires_approval="on"))

    assert response.status_code == 302, errors(response)
    tool = Tool.objects.get(name="summarise")
    assert (tool.kind, tool.workflow, tool.parameters) == (
        ToolKind.WORKFLOW, flow, WORKFLOW_PARAMETERS)
    assert tool.timeout_s == 45 and tool.requires_approval
    assert tool.description_en == "Summarises a text."


def test_a_schema_that_is_not_json_schema_is_refused(admin_client, flow):
    bad = {"type": "object", "properties": {"text": {"type": "strng"}}}

    response = admin_client.post(reverse("admin:chat_tool_add"),
                                 form(workflow=flow.pk, parameters=json.dumps(bad)))
    array = admin_client.post(reverse("admin:chat_tool_add"),
                              form(workflow=flow.pk, parameters='{"type": "array"}'))

    assert response.status_code == 200 and not Tool.objects.filter(name="summarise").exists()
    [message] = errors(response)["parameters"]
    assert message.startswith("Not a valid JSON schema (properties/text/type): ")
    assert errors(array)["parameters"] == [
        "The parameters must be a JSON schema of an object."]


def test_a_workflow_without_a_default_model_is_refused(admin_client, flow):
    flow.default_model = ""
    flow.save()

    response = admin_client.post(reverse("admin:chat_tool_add"), form(workflow=flow.pk))
    missing = admin_client.post(reverse("admin:chat_tool_add"), form())

    assert "“summary” has no default model" in errors(response)["workflow"][0]
    assert errors(missing)["workflow"] == ["A workflow tool names its workflow."]
    assert not Tool.objects.filter(name="summarise").exists()


def test_a_built_in_rows_code_link_and_schema_are_read_only(admin_client):
    sync_builtin_rows()
    row = Tool.objects.get(builtin="calculator")
    url = reverse("admin:chat_tool_change", args=[row.pk])

    page = admin_client.get(url).content.decode()
    response = admin_client.post(url, form(
        name="calc", description_en="Does sums.", timeout_s="3",
        parameters='{"type": "object"}', builtin="current_time", kind="workflow"))

    assert '&quot;expression&quot;: {' in page and 'name="parameters"' not in page
    assert 'name="builtin"' not in page and 'name="kind"' not in page
    assert response.status_code == 302, errors(response)
    row.refresh_from_db()
    assert (row.name, row.description_en, row.timeout_s) == ("calc", "Does sums.", 3)
    assert (row.kind, row.builtin) == (ToolKind.BUILTIN, "calculator")
    assert row.parameters["required"] == ["expression"]


def test_the_list_shows_the_tools(admin_client, flow):
    Tool.objects.create(name="summarise", kind=ToolKind.WORKFLOW, workflow=flow,
                        parameters=WORKFLOW_PARAMETERS)

    page = admin_client.get(reverse("admin:chat_tool_changelist"), {"kind": "workflow"})

    assert page.status_code == 200 and "summarise" in page.content.decode()
