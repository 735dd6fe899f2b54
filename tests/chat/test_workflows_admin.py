"""The workflow admin: an invalid graph refused on save with the node named (a field
error of the form), the drawing on the change page (rendered, not Mermaid text), and a waiting
run approved from the run list."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from django.urls import reverse

from chat.graph.service import arun_turn
from chat.models import Message, RunStatus, Workflow, WorkflowRun
from routing.models import ModelEndpoint

pytestmark = pytest.mark.django_db(transaction=True)

VALID = {"nodes": [{"id": "answer", "type": "llm"},
                   {"id": "review", "type": "human_approval"},
                   {"id": "store", "type": "memory_write"}],
         "edges": [{"source": "answer", "target": "review"},
                   {"source": "review", "target": "store"}]}


def form(definition: dict, slug: str = "flow") -> dict:
    return {"slug": slug, "name_en": "Flow", "name_zh_hans": "", "description_en": "",
            "description_zh_hans": "", "enabled": "on", "default_model": "echo",
            "double_texting": "enqueue", "definition": json.dumps(definition)}


def test_invalid_graph_is_refused_on_save_naming_the_node(admin_client):
    broken = {"nodes": [{"id": "answer", "type": "llm"}, {"id": "lost", "type": "end"}],
              "edges": []}

    response = admin_client.post(reverse("admin:chat_workflow_add"), form(broken))

    assert response.status_code == 200 and not Workflow.objects.exists()
    errors = response.context["adminform"].form.errors["definition"]
    assert errors == ["node “lost” (end) cannot be reached from the entry “answer”."]


def test_change_page_shows_the_drawing(admin_client):
    response = admin_client.post(reverse("admin:chat_workflow_add"), form(VALID))
    assert response.status_code == 302
    flow = Workflow.objects.get(slug="flow")

    page = admin_client.get(reverse("admin:chat_workflow_change", args=[flow.pk]))

    html = page.content.decode()
    assert 'class="wf-drawing"' in html and "<svg" in html
    assert 'data-node="answer"' in html and 'data-node="store"' in html
    assert "mermaid" not in html.lower()


def test_waiting_run_is_approved_from_the_admin(admin_client):
    ModelEndpoint.objects.create(name="echo", engine="echo")
    Workflow.objects.create(slug="flow", name="flow", definition=VALID)
    waiting = async_to_sync(arun_turn)(conversation_id=None, user="admin", content="ship it",
                                       model="echo", workflow="flow")
    run = WorkflowRun.objects.get(conversation_id=waiting["conversation_id"])
    assert run.status == RunStatus.WAITING

    admin_client.post(reverse("admin:chat_workflowrun_changelist"),
                      {"action": "approve", "_selected_action": [run.pk]})

    run.refresh_from_db()
    assert run.status == RunStatus.DONE
    assert Message.objects.filter(conversation_id=run.conversation_id,
                                  role="assistant").get().content == "ship it"
