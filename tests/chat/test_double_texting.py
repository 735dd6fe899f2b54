"""Double texting, on the real Redis (the active-run lease) and PostgreSQL: a second
send while the first run of the same conversation is still streaming (a slow loopback
model: 150 ms a token), under each policy a workflow can set, and across processes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from chat.graph.service import arun_turn, astream_turn, graph_for, thread_config
from chat.models import Conversation, DoubleTexting, Message, Workflow
from chat.workflows import runs
from chat.workflows.compiler import resolve
from routing.models import ModelEndpoint

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("no_recall", "closed_saver")]


@pytest.fixture
def slow(db, openai_server):
    """``slow``: the loopback model, 150 ms before each token."""
    ModelEndpoint.objects.create(name="slow", engine="openai", upstream_model="slow-150",
                                 endpoint_url=openai_server.url)
    return openai_server


def chat_workflow(policy: str) -> Workflow:
    """The conversation graph's stages, with the double-texting policy under test."""
    nodes = [{"id": "recall", "type": "memory_recall"},
             {"id": "answer", "type": "llm"}, {"id": "store", "type": "memory_write"}]
    return Workflow.objects.create(
        slug=f"dt-{policy}", name=policy, double_texting=policy, definition={
            "nodes": nodes, "edges": [{"source": "recall", "target": "answer"},
                                      {"source": "answer", "target": "store"}]})


async def overlapping(policy: str, user: str, second_policy: str | None = None
                      ) -> tuple[str, list[dict], list[dict]]:
    """A conversation with one turn, then two sends: the second (with its own policy,
    if given) once the first has streamed its first token. Both sends' events."""
    await sync_to_async(chat_workflow)(policy)
    first = await arun_turn(conversation_id=None, user=user, content="one", model="slow",
                            workflow=f"dt-{policy}")
    conversation = first["conversation_id"]
    streaming = asyncio.Event()
    first_events: list[dict] = []

    async def send_first() -> None:
        async for event in astream_turn(conversation_id=conversation, user=user,
                                        content="first of two long words", model="slow"):
            first_events.append(event)
            if event["type"] == "token":
                streaming.set()

    task = asyncio.create_task(send_first())
    await asyncio.wait_for(streaming.wait(), 10)
    second_events = [e async for e in astream_turn(conversation_id=conversation, user=user,
                                                   content="second", model="slow",
                                                   double_texting=second_policy)]
    await asyncio.wait_for(task, 20)
    return conversation, first_events, second_events


def stored(conversation_id: str) -> list[tuple[int, str, str]]:
    return list(Message.objects.filter(conversation_id=conversation_id)
                .order_by("turn", "id").values_list("turn", "role", "content"))


def sent_user_texts(server) -> list[str]:
    return [m["content"] for m in server.requests[-1].body["messages"] if m["role"] == "user"]


async def test_enqueue_runs_the_second_message_after_the_first(slow):
    conversation, first, second = await overlapping(DoubleTexting.ENQUEUE, "amy")

    assert first[-1]["type"] == "done" and second[-1]["type"] == "done"
    assert first[-1]["content"] == "echo: first of two long words"
    # the second ran after the first had answered: it saw the whole first turn
    assert sent_user_texts(slow) == ["one", "first of two long words", "second"]
    assert await sync_to_async(stored)(conversation) == [
        (1, "user", "one"), (1, "assistant", "echo: one"),
        (2, "user", "first of two long words"),
        (2, "assistant", "echo: first of two long words"),
        (3, "user", "second"), (3, "assistant", "echo: second")]


async def test_reject_refuses_the_second_message_and_stores_nothing(slow):
    conversation, first, second = await overlapping(DoubleTexting.REJECT, "bea")

    assert second == [{"type": "error", "code": "run_active", "status": 409,
                       "message": second[0]["message"]}]
    assert first[-1]["type"] == "done"
    assert [text for _t, role, text in await sync_to_async(stored)(conversation)
            if role == "user"] == ["one", "first of two long words"]


async def test_interrupt_cancels_the_first_run_and_keeps_its_message(slow):
    conversation, first, second = await overlapping(DoubleTexting.INTERRUPT, "cid")

    assert first[-1]["type"] == "error" and first[-1]["code"] == "interrupted"
    assert second[-1]["type"] == "done" and second[-1]["content"] == "echo: second"
    # the first message stays, unanswered, and the second run saw it
    assert await sync_to_async(stored)(conversation) == [
        (1, "user", "one"), (1, "assistant", "echo: one"),
        (2, "user", "first of two long words"),
        (3, "user", "second"), (3, "assistant", "echo: second")]
    assert sent_user_texts(slow) == ["one", "first of two long words", "second"]
    # the cancelled generation's stream was cut short (fewer tokens than its words)
    tokens = [e for e in first if e["type"] == "token"]
    assert 1 <= len(tokens) < 6


async def test_rollback_cancels_the_first_run_and_forgets_it(slow):
    conversation, first, second = await overlapping(DoubleTexting.ROLLBACK, "dax")

    assert first[-1]["type"] == "error" and first[-1]["code"] == "rolled_back"
    assert second[-1]["type"] == "done"
    # as if the first of the two had never been sent
    assert await sync_to_async(stored)(conversation) == [
        (1, "user", "one"), (1, "assistant", "echo: one"),
        (2, "user", "second"), (2, "assistant", "echo: second")]
    assert sent_user_texts(slow) == ["one", "second"]
    assert (await Conversation.objects.aget(pk=conversation)).turns == 2
    # the thread went on from the checkpoint the cancelled run started from
    graph = await graph_for(await sync_to_async(resolve)(None, conversation))
    state = await graph.aget_state(thread_config(conversation))
    assert state.values["turns"] == 2
    assert state.values["message"]["content"] == "second"


async def test_policy_can_be_chosen_per_send(slow):
    # the workflow enqueues; this send rolls the active run back instead
    conversation, first, second = await overlapping(DoubleTexting.ENQUEUE, "eve",
                                                    second_policy=DoubleTexting.ROLLBACK)

    assert first[-1]["code"] == "rolled_back" and second[-1]["type"] == "done"
    assert [text for _t, role, text in await sync_to_async(stored)(conversation)
            if role == "user"] == ["one", "second"]
    refused = await arun_turn(conversation_id=conversation, user="eve", content="hi",
                              model="slow", double_texting="nonsense")
    assert refused["code"] == "invalid_double_texting"


async def test_the_active_run_is_seen_by_another_process(slow):
    # given a conversation whose next run goes on in another process (a second web replica)
    await sync_to_async(chat_workflow)(DoubleTexting.REJECT)
    first = await arun_turn(conversation_id=None, user="fox", content="one", model="slow",
                            workflow="dt-reject")
    conversation = first["conversation_id"]
    script = ("import asyncio, json, django; django.setup();"
              "from chat.graph.service import arun_turn;"
              f"print(json.dumps(asyncio.run(arun_turn(conversation_id={conversation!r}, "
              "user='fox', content='a long answer from elsewhere please', "
              "model='slow'))))")
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings",
               OPENCLAW_TEST_WORKER_DB=connection.settings_dict["NAME"],
               OPENCLAW_MEMORY_TOP_K="0")
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=env, cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not await sync_to_async(runs.active_run)(conversation):
        assert time.monotonic() < deadline and other.returncode is None
        await asyncio.sleep(0.05)

    # when this process sends meanwhile
    refused = await arun_turn(conversation_id=conversation, user="fox", content="me too",
                              model="slow")

    # then the other process's run holds the conversation
    out, err = await asyncio.wait_for(other.communicate(), 60)
    assert refused["code"] == "run_active"
    assert json.loads(out.decode().strip().splitlines()[-1])["type"] == "done", err[-2000:]
