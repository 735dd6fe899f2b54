"""The editor's run panel on the real PostgreSQL (checkpoints), Redis and the websocket
consumer: runs record the workflow's version (on the waiting run and in every
checkpoint's metadata), a traced turn checkpoints after every node, the steps API
shows each node's input and output state, and a branch replayed from a step inside a
turn runs on from there (``continue``) while its parent stays as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import AsyncClient, Client

from chat.graph import checkpointer
from chat.models import Conversation, Message, RunStatus, Workflow, WorkflowRun
from chat.websocket_urls import websocket_urlpatterns
from routing.models import ModelEndpoint

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("no_recall", "closed_saver")]
FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "50_workflows.json"
ORIGIN = (b"origin", b"http://127.0.0.1")
BEFORE_REVIEW = [None, "recall", "pre_process", "triage", "draft"]


@pytest.fixture
def triage(db):
    """The demo's ``support-triage`` workflow (a refund is drafted, then a person
    reviews it), published as version 3, and the echo model."""
    call_command("loaddata", str(FIXTURE), verbosity=0)
    ModelEndpoint.objects.create(name="echo", engine="echo")
    workflow = Workflow.objects.get(slug="support-triage")
    workflow.live_version = 3
    workflow.save()
    return workflow


@pytest.fixture
def ada(db):
    user = get_user_model().objects.create_user("ada", password="pw-ada-1", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_workflow"))
    return user


async def connect(user, conversation: str = "new") -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns),
                                         f"/ws/chat/{conversation}/", headers=[ORIGIN])
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def until(ws: WebsocketCommunicator, *kinds: str) -> list[dict]:
    """Frames up to and including the first whose type is one of ``kinds``."""
    frames = []
    while True:
        frame = await ws.receive_json_from(timeout=20)
        if frame["type"] == "history":
            continue
        frames.append(frame)
        if frame["type"] in kinds:
            return frames


def ended(frames: list[dict]) -> list[str]:
    return [f["node"] for f in frames if f["type"] == "node" and f["phase"] == "end"]


async def client_for(user) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(user)
    return client


async def steps_of(client: AsyncClient, conversation: str) -> list[dict]:
    answer = await client.get(f"/studio/api/conversations/{conversation}/steps/")
    assert answer.status_code == 200, answer.content
    return answer.json()["steps"]


async def refund_waiting(ada, trace: bool = True) -> tuple[WebsocketCommunicator, str]:
    ws = await connect(ada)
    await ws.send_json_to({"type": "message", "id": "q", "content": "I want a refund please",
                           "model": "echo", "workflow": "support-triage", "trace": trace})
    frames = await until(ws, "waiting", "done", "error")
    assert frames[-1]["type"] == "waiting", frames[-1]
    return ws, frames[0]["conversation"]


async def test_a_traced_turn_checkpoints_each_node_with_the_version(triage, ada):
    # given the support-triage workflow, published as version 3
    # when a refund question is sent traced, and the draft approved (traced too)
    ws, conversation = await refund_waiting(ada)
    await ws.send_json_to({"type": "approve", "id": "a", "trace": True})
    frames = await until(ws, "done", "error")
    assert frames[-1]["type"] == "done", frames[-1]
    await ws.disconnect()

    # then the waiting run recorded the version it ran
    run = await WorkflowRun.objects.aget(conversation_id=conversation)
    assert run.workflow_version == 3 and run.status == RunStatus.DONE
    # and every checkpoint of the thread records it in its metadata
    saver = await checkpointer.get_saver()
    stored = [c async for c in saver.alist({"configurable": {"thread_id": conversation}})]
    assert stored and {c.metadata.get("workflow_version") for c in stored} == {3}
    # and there is one step per node, in the order they ran
    steps = await steps_of(await client_for(ada), conversation)
    assert [s["node"] for s in steps] == [*BEFORE_REVIEW, "review", "post_process",
                                          "remember"]
    assert steps[4]["next"] == ["review"] and steps[-1]["next"] == []
    assert {s["workflow_version"] for s in steps} == {3}


async def test_an_untraced_turn_checkpoints_only_where_it_stops(triage, ada, settings):
    settings.OPENCLAW_GRAPH_DURABILITY = "exit"

    ws, conversation = await refund_waiting(ada, trace=False)
    await ws.disconnect()

    saver = await checkpointer.get_saver()
    stored = [c async for c in saver.alist({"configurable": {"thread_id": conversation}})]
    assert len(stored) == 1 and stored[0].metadata["workflow_version"] == 3


def texts(conversation_id: str) -> list[tuple[int, str, str]]:
    return list(Message.objects.filter(conversation_id=conversation_id)
                .order_by("turn", "id").values_list("turn", "role", "content"))


async def head(conversation_id: str) -> str:
    saver = await checkpointer.get_saver()
    found = await saver.aget_tuple({"configurable": {"thread_id": conversation_id}})
    return found.config["configurable"]["checkpoint_id"]


async def test_steps_show_each_nodes_input_and_output_state(triage, ada):
    # given a traced refund turn waiting for review
    ws, conversation = await refund_waiting(ada)
    await ws.disconnect()

    # when its steps are read
    steps = await steps_of(await client_for(ada), conversation)

    # then each names its node, the state before it and the keys it changed
    assert [s["node"] for s in steps] == BEFORE_REVIEW
    first, triaged, drafted = steps[0], steps[3], steps[4]
    assert first["input"] == {"turns": 0, "agent_messages": []}
    assert first["output"]["message"]["content"] == \
        "I want a refund please" and first["turn"] == 1 and first["parent_id"]
    assert triaged["output"] == {"outputs": {"triage": {"to": "draft"}}}
    assert triaged["input"]["outputs"] == {} and triaged["next"] == ["draft"]
    assert drafted["input"]["outputs"] == {"triage": {"to": "draft"}}
    assert drafted["output"]["reply"]["content"] == "I want a refund please"
    assert set(drafted["output"]) == {"reply", "route"}
    assert drafted["interrupts"][0]["node"] == "review" and drafted["next"] == ["review"]
    assert [s["parent_id"] for s in steps[1:]] == [s["checkpoint_id"] for s in steps[:-1]]
    # one turn's steps alone
    answer = await (await client_for(ada)).get(
        f"/studio/api/conversations/{conversation}/steps/?turn=2")
    assert answer.json() == {"steps": []}


async def test_long_text_in_a_step_is_cut(triage, ada):
    ws = await connect(ada)
    await ws.send_json_to({"type": "message", "content": "refund " + "x" * 5000,
                           "model": "echo", "workflow": "support-triage", "trace": True})
    frames = await until(ws, "waiting", "done", "error")
    await ws.disconnect()

    steps = await steps_of(await client_for(ada), frames[0]["conversation"])

    content = steps[0]["output"]["message"]["content"]
    assert len(content) == 2000 and content.endswith("…")


async def test_replay_from_a_step_inside_a_turn_runs_on_in_a_branch(triage, ada):
    # given a traced refund turn, approved and answered
    ws, conversation = await refund_waiting(ada)
    await ws.send_json_to({"type": "approve", "id": "a", "trace": True})
    assert (await until(ws, "done", "error"))[-1]["type"] == "done"
    await ws.disconnect()
    client = await client_for(ada)
    triaged = next(s for s in await steps_of(client, conversation) if s["node"] == "triage")
    parent_texts, parent_head = await sync_to_async(texts)(conversation), await head(conversation)

    # when a branch is replayed from the step after triage
    answer = await client.post(f"/studio/api/conversations/{conversation}/replay/",
                               {"checkpoint_id": triaged["checkpoint_id"]},
                               content_type="application/json")

    # then it holds the turn's question only, and would run the draft next
    assert answer.status_code == 201, answer.content
    replayed = answer.json()
    branch = replayed["conversation_id"]
    assert replayed["next"] == ["draft"]
    assert replayed["checkpoint_id"] == triaged["checkpoint_id"]
    assert await sync_to_async(texts)(branch) == [(1, "user", "I want a refund please")]
    made = await Conversation.objects.aget(pk=branch)
    assert str(made.parent_id) == conversation and made.workflow_id == triage.pk

    # when the branch continues: the draft runs, and the run waits for review again
    ws = await connect(ada, branch)
    await ws.send_json_to({"type": "continue", "id": "c"})
    frames = await until(ws, "waiting", "done", "error")
    assert frames[0]["type"] == "conversation" and frames[0]["conversation"] == branch
    assert ended(frames) == ["draft"] and frames[-1]["type"] == "waiting"
    assert {f["id"] for f in frames} == {"c"}
    run = await WorkflowRun.objects.aget(conversation_id=branch)
    assert run.workflow_version == 3 and run.user == "ada"
    # and approved, it finishes in the branch
    await ws.send_json_to({"type": "approve", "id": "a2", "trace": True})
    frames = await until(ws, "done", "error")
    assert frames[-1]["type"] == "done" and ended(frames) == ["review", "post_process",
                                                              "remember"]
    assert await sync_to_async(texts)(branch) == [
        (1, "user", "I want a refund please"), (1, "assistant", "I want a refund please")]
    assert [s["node"] for s in await steps_of(client, branch)] == [
        None, "draft", "review", "post_process", "remember"]
    # nothing is left to continue
    await ws.send_json_to({"type": "continue", "id": "c2"})
    refused = (await until(ws, "error"))[-1]
    assert refused["code"] == "nothing_to_continue" and refused["id"] == "c2"
    await ws.disconnect()

    # and the parent is as it was
    assert await sync_to_async(texts)(conversation) == parent_texts
    assert await head(conversation) == parent_head


async def test_someone_elses_run_is_not_found(triage, ada):
    ws, conversation = await refund_waiting(ada)
    await ws.disconnect()
    bob = await sync_to_async(get_user_model().objects.create_user)("bob", password="pw-b-1")
    client = await client_for(bob)
    first = (await steps_of(await client_for(ada), conversation))[0]

    steps = await client.get(f"/studio/api/conversations/{conversation}/steps/")
    replay = await client.post(f"/studio/api/conversations/{conversation}/replay/",
                               {"checkpoint_id": first["checkpoint_id"]},
                               content_type="application/json")

    assert steps.status_code == 404 and replay.status_code == 404
    assert steps.json()["error"]["code"] == "conversation_not_found"
    assert await Conversation.objects.filter(user="bob").acount() == 0
    # nor is a step of another thread
    mine = await (await client_for(ada)).post(
        f"/studio/api/conversations/{conversation}/replay/", {"checkpoint_id": "nope"},
        content_type="application/json")
    assert mine.status_code == 404 and mine.json()["error"]["code"] == "checkpoint_not_found"


async def test_runs_list_the_users_conversations_with_their_version(triage, ada):
    # given a run waiting for review, then one answered (no waiting run recorded), after
    # the workflow's version 4 was published
    ws, waiting = await refund_waiting(ada)
    await ws.disconnect()
    triage.live_version = 4
    await triage.asave()
    ws = await connect(ada)
    await ws.send_json_to({"type": "message", "content": "opening hours?", "model": "echo",
                           "workflow": "support-triage"})
    answered = (await until(ws, "done", "error"))[-1]
    assert answered["type"] == "done"
    await ws.disconnect()
    url = "/studio/api/workflows/support-triage/runs/"

    # when the runs are listed
    runs = (await (await client_for(ada)).get(url)).json()["runs"]

    # then newest first, each with the version it ran
    assert [(r["conversation_id"], r["workflow_version"], r["turns"]) for r in runs] == [
        (answered["conversation"], 4, 1), (waiting, 3, 1)]
    assert runs[1]["title"] == "I want a refund please" and runs[1]["parent_id"] is None
    assert not await WorkflowRun.objects.filter(
        conversation_id=answered["conversation"]).aexists()
    # signed out: 401; without the permission (or staff): 403; an unknown workflow: 404
    assert (await AsyncClient().get(url)).status_code == 401
    bob = await sync_to_async(get_user_model().objects.create_user)("bob", password="pw-b-1")
    assert (await (await client_for(bob)).get(url)).status_code == 403
    # the editor's rule (chat.editor_api.may): the permission alone, without staff, is not
    await sync_to_async(bob.user_permissions.add)(
        await Permission.objects.aget(codename="view_workflow"))
    assert (await (await client_for(bob)).get(url)).status_code == 403
    missing = await (await client_for(ada)).get("/studio/api/workflows/nope/runs/")
    assert missing.status_code == 404


async def test_continue_without_a_conversation_or_with_a_bad_trace_is_refused(triage, ada):
    ws = await connect(ada)

    await ws.send_json_to({"type": "continue", "id": "c"})
    assert (await until(ws, "error"))[-1]["code"] == "no_conversation"
    await ws.send_json_to({"type": "message", "id": "m", "content": "hi", "model": "echo",
                           "trace": "yes"})
    refused = (await until(ws, "error"))[-1]
    assert refused["code"] == "invalid_trace" and refused["param"] == "trace"
    await ws.disconnect()


def test_the_steps_api_answers_through_wsgi_too(triage, ada):
    """Django's test client serves the async views in an event loop per request: the
    saver each one opens is closed with it (requests after it still answer)."""
    async def waiting_run() -> str:
        ws, conversation = await refund_waiting(ada)
        await ws.disconnect()
        await checkpointer.close_saver()
        return conversation

    conversation = async_to_sync(waiting_run)()
    client = Client()
    client.force_login(ada)

    for _ in range(3):
        answer = client.get(f"/studio/api/conversations/{conversation}/steps/")
        assert answer.status_code == 200
        assert [s["node"] for s in answer.json()["steps"]] == BEFORE_REVIEW
    replayed = client.post(f"/studio/api/conversations/{conversation}/replay/",
                           {"checkpoint_id": answer.json()["steps"][1]["checkpoint_id"]},
                           content_type="application/json")
    assert replayed.status_code == 201 and replayed.json()["next"] == ["pre_process"]
    assert client.get("/studio/api/workflows/support-triage/runs/").status_code == 200
