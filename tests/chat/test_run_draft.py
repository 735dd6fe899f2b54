"""The editor's Run tab runs the version open on its canvas, a draft included, on the
real PostgreSQL (checkpoints), Redis and the websocket consumer: a ``message`` naming a
saved ``version`` runs that version's definition while the published one keeps running
for everyone else, the run records the version's number, an approval stop in a draft
resumes on the draft (so does a branch replayed from one of its steps), only users who
may change workflows may ask for a version, and the compiled graphs of the live and
the draft definitions are cached apart."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import AsyncClient

from chat.graph import checkpointer
from chat.models import Conversation, RunStatus, Workflow, WorkflowRun
from chat.workflows.compiler import WorkflowError, aresolve, aresolve_version, compiled
from chat.workflows.versions import ensure_history, publish, save_version
from routing.models import ModelEndpoint
from tests.chat.test_run_steps import connect, ended, until

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("no_recall", "closed_saver")]
FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "50_workflows.json"
SLUG = "support-triage"
REFUND, HOURS = "I want a refund please", "opening hours?"


def drafted(definition: dict) -> dict:
    """support-triage edited on the canvas: its plain answer is the node ``faq`` now, and
    an ``audit`` step runs after the review."""
    draft = copy.deepcopy(definition)
    for node in draft["nodes"]:
        if node["id"] == "answer":
            node["id"] = "faq"
        if node["id"] == "triage":
            node["config"]["else"] = "faq"
    draft["nodes"].append({"id": "audit", "type": "plugin", "config": {"phase": "post"}})
    draft["edges"] = [edge for edge in draft["edges"] if edge["source"] not in ("answer",
                                                                                "review")]
    draft["edges"] += [{"source": "faq", "target": "post_process"},
                       {"source": "review", "target": "audit"},
                       {"source": "audit", "target": "post_process"}]
    return draft


@pytest.fixture
def triage(db):
    """support-triage published as version 1, and version 2 a draft (``drafted``)."""
    call_command("loaddata", str(FIXTURE), verbosity=0)
    ModelEndpoint.objects.create(name="echo", engine="echo")
    workflow = Workflow.objects.get(slug=SLUG)
    ensure_history(workflow)
    made = save_version(workflow, drafted(workflow.definition), note="try faq")
    workflow.refresh_from_db()
    assert (workflow.live_version, made.number, made.published_at) == (1, 2, None)
    return workflow


def staff(name: str, *codenames: str):
    user = get_user_model().objects.create_user(name, password=f"pw-{name}-1", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def editor(db):
    """A staff user who may change workflows."""
    return staff("ada", "view_workflow", "change_workflow")


async def turn(ws: WebsocketCommunicator, content: str, **extra) -> list[dict]:
    await ws.send_json_to({"type": "message", "id": "q", "content": content, "model": "echo",
                           "workflow": SLUG, "trace": True, **extra})
    return await until(ws, "waiting", "done", "error")


async def recorded_versions(conversation: str) -> set:
    saver = await checkpointer.get_saver()
    return {c.metadata.get("workflow_version") async for c in saver.alist(
        {"configurable": {"thread_id": conversation}})}


async def test_a_draft_runs_while_published_runs_keep_the_live_definition(triage, editor):
    # when the same question is sent to the draft (version 2) and, in another
    # conversation, to the workflow as published
    ws = await connect(editor)
    draft = await turn(ws, HOURS, version=2)
    await ws.disconnect()
    ws = await connect(editor)
    live = await turn(ws, HOURS)
    await ws.disconnect()

    # then the draft's nodes ran in the first, the published ones in the second
    assert draft[-1]["type"] == "done" and live[-1]["type"] == "done", (draft[-1], live[-1])
    assert ended(draft) == ["recall", "pre_process", "triage", "faq", "post_process",
                            "remember"]
    assert ended(live) == ["recall", "pre_process", "triage", "answer", "post_process",
                           "remember"]
    # and each run's checkpoints record the version it ran
    assert await recorded_versions(draft[0]["conversation"]) == {2}
    assert await recorded_versions(live[0]["conversation"]) == {1}
    # and the draft is still a draft: nothing was published
    workflow = await Workflow.objects.aget(slug=SLUG)
    assert workflow.live_version == 1 and workflow.definition == triage.definition


async def test_an_approval_stop_in_a_draft_resumes_on_the_draft(triage, editor):
    # given a refund question run on the draft, waiting for review
    ws = await connect(editor)
    frames = await turn(ws, REFUND, version=2)
    assert frames[-1]["type"] == "waiting", frames[-1]
    conversation = frames[0]["conversation"]
    # then the waiting run records the draft's number
    run = await WorkflowRun.objects.aget(conversation_id=conversation)
    assert run.workflow_version == 2 and run.status == RunStatus.WAITING

    # when it is approved (the frame names no version)
    await ws.send_json_to({"type": "approve", "id": "a", "trace": True})
    frames = await until(ws, "done", "error")
    await ws.disconnect()

    # then the draft's nodes run after the approval, not the published ones
    assert frames[-1]["type"] == "done", frames[-1]
    assert ended(frames) == ["review", "audit", "post_process", "remember"]
    run = await WorkflowRun.objects.aget(conversation_id=conversation)
    assert run.status == RunStatus.DONE and run.workflow_version == 2
    assert await recorded_versions(conversation) == {2}

    # when a branch is replayed from the draft run's triage step and continued
    client = AsyncClient()
    await client.aforce_login(editor)
    steps = (await client.get(f"/studio/api/conversations/{conversation}/steps/")).json()
    assert [s["node"] for s in steps["steps"]][-4:] == ["review", "audit", "post_process",
                                                        "remember"]
    triaged = next(s for s in steps["steps"] if s["node"] == "triage")
    answer = await client.post(f"/studio/api/conversations/{conversation}/replay/",
                               {"checkpoint_id": triaged["checkpoint_id"]},
                               content_type="application/json")
    assert answer.status_code == 201, answer.content
    branch = answer.json()["conversation_id"]
    ws = await connect(editor, branch)
    await ws.send_json_to({"type": "continue", "id": "c"})
    assert ended(await until(ws, "waiting", "done", "error")) == ["draft"]
    await ws.send_json_to({"type": "approve", "id": "a2", "trace": True})
    frames = await until(ws, "done", "error")
    await ws.disconnect()

    # then the branch goes on with the draft too
    assert frames[-1]["type"] == "done", frames[-1]
    assert ended(frames) == ["review", "audit", "post_process", "remember"]
    assert (await WorkflowRun.objects.aget(conversation_id=branch)).workflow_version == 2


async def test_a_published_run_waiting_before_a_publish_resumes_on_its_own_version(
        triage, editor):
    # given a refund run of the published version 1, waiting for review
    ws = await connect(editor)
    frames = await turn(ws, REFUND)
    assert frames[-1]["type"] == "waiting", frames[-1]
    # when the draft is published meanwhile, and the waiting run approved
    await sync_to_async(publish)(triage, 2)
    await ws.send_json_to({"type": "approve", "id": "a", "trace": True})
    frames = await until(ws, "done", "error")
    await ws.disconnect()

    # then it ends as version 1 would (no audit), and a new run uses version 2
    assert ended(frames) == ["review", "post_process", "remember"]
    ws = await connect(editor)
    assert "faq" in ended(await turn(ws, HOURS))
    await ws.disconnect()


async def test_versions_only_for_users_who_may_change_workflows(triage, editor):
    viewer = await sync_to_async(staff)("bob", "view_workflow")
    plain = await sync_to_async(get_user_model().objects.create_user)("cy", password="pw-c-1")
    root = await sync_to_async(get_user_model().objects.create_superuser)(
        "root", "root@example.com", "pw-root-1")

    # a user who may only view workflows, or a user without staff rights: refused
    for user in (viewer, plain):
        ws = await connect(user)
        refused = (await turn(ws, HOURS, version=2))[-1]
        await ws.disconnect()
        assert (refused["type"], refused["code"], refused["param"]) == (
            "error", "version_forbidden", "version")
    # an unknown version, a version without a workflow or of the wrong shape
    ws = await connect(editor)
    missing = (await turn(ws, HOURS, version=9))[-1]
    assert (missing["code"], missing["status"]) == ("version_not_found", 404)
    for frame in ({"workflow": None, "version": 2}, {"version": "2"}, {"version": 0},
                  {"version": True}):
        await ws.send_json_to({"type": "message", "content": HOURS, "model": "echo",
                               "workflow": SLUG, **frame})
        refused = (await until(ws, "error"))[-1]
        assert (refused["code"], refused["param"]) == ("invalid_version", "version"), frame
    await ws.disconnect()
    # nothing was stored for any of them
    assert await Conversation.objects.acount() == 0
    # a superuser may run the draft
    ws = await connect(root)
    assert "faq" in ended(await turn(ws, HOURS, version=2))
    await ws.disconnect()


async def test_the_compiled_plan_cache_keeps_live_and_draft_apart(triage):
    # given the live plan (version 1) and the draft's (version 2)
    saver = await checkpointer.get_saver()
    live = await aresolve(SLUG)
    draft = await aresolve_version(SLUG, 2)

    # then the live version asked by number is the live plan itself (no query, one graph)
    assert await aresolve_version(SLUG, 1) is live
    # the draft's plan runs its definition, records its number, and keys apart
    assert (live.live_version, draft.live_version) == (1, 2)
    assert draft.key != live.key and draft.key[0] == (SLUG, triage.pk, "v", 2)
    live_graph, draft_graph = compiled(live, saver), compiled(draft, saver)
    assert "answer" in live_graph.nodes and "faq" not in live_graph.nodes
    assert "faq" in draft_graph.nodes and "audit" in draft_graph.nodes
    # each is compiled once
    assert compiled(await aresolve_version(SLUG, 2), saver) is draft_graph
    assert compiled(await aresolve(SLUG), saver) is live_graph
    # a version asked for before it was saved is found once it is
    with pytest.raises(WorkflowError) as missing:
        await aresolve_version(SLUG, 3)
    assert missing.value.code == "version_not_found"
    await sync_to_async(save_version)(triage, drafted(triage.definition), note="again")
    assert (await aresolve_version(SLUG, 3)).live_version == 3
