"""The conversation graph on the real PostgreSQL (checkpoints) and Redis (window cache):
the events of a turn, resuming a thread in a fresh process, the cached window's
fallback to the database, plugin refusals and routing failures ending a turn cleanly,
checkpoints that hold no plaintext, and the gateway as a LangChain chat model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import connection

from chat.graph import checkpointer
from chat.graph.service import arun_turn, astream_turn, get_graph, thread_config
from chat.models import Conversation, Message
from core.crypto import new_key_spec, parse_keys
from core.rotation import rotate_data
from plugins import chain as plugin_chain
from plugins.models import Plugin
from routing.models import ModelEndpoint

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("no_recall", "closed_saver")]
NODES = ["recall", "pre_process", "generate", "post_process", "remember"]


@pytest.fixture
def echo(db):
    return ModelEndpoint.objects.create(name="echo", engine="echo")


@pytest.fixture
def recorded(openai_server):
    """A loopback OpenAI model named "recorded" whose requests the server keeps."""
    ModelEndpoint.objects.create(name="recorded", engine="openai", upstream_model="echo",
                                 endpoint_url=openai_server.url)
    return openai_server


def sent_user_texts(server) -> list[str]:
    """The user messages of the last request the loopback model got."""
    return [m["content"] for m in server.requests[-1].body["messages"] if m["role"] == "user"]


async def collect(**kwargs) -> list[dict]:
    return [event async for event in astream_turn(**kwargs)]


async def test_turn_streams_node_route_token_usage_and_done_events(echo):
    # when
    events = await collect(conversation_id=None, user="alice", content="hello there world",
                           model="echo")

    # then
    kinds = [e["type"] for e in events]
    assert kinds[0] == "conversation" and kinds[-1] == "done"
    starts = [e["node"] for e in events if e["type"] == "node" and e["phase"] == "start"]
    ends = [e["node"] for e in events if e["type"] == "node" and e["phase"] == "end"]
    assert starts == NODES and ends == NODES
    route = next(e for e in events if e["type"] == "route")
    assert route["target"] == "echo" and route["rule"] is None
    tokens = [e["text"] for e in events if e["type"] == "token"]
    assert "".join(tokens) == "hello there world" and len(tokens) == 3
    assert kinds.index("token") > kinds.index("route")
    usage = next(e for e in events if e["type"] == "usage")
    assert usage["completion_tokens"] == 3 and usage["model"] == "echo"
    done = events[-1]
    assert done["content"] == "hello there world" and done["model"] == "echo"
    json.dumps(events)  # every event is JSON-serialisable
    stored = await sync_to_async(list)(Message.objects.filter(
        conversation_id=events[0]["id"]).order_by("id").values_list("role", "content"))
    assert stored == [("user", "hello there world"), ("assistant", "hello there world")]
    assert (await Message.objects.aget(pk=done["message_id"])).role == "assistant"


async def test_conversation_resumes_from_its_checkpoint_in_a_fresh_process(recorded):
    # given three turns in this process
    first = await arun_turn(conversation_id=None, user="bob", content="turn one about apples",
                            model="recorded")
    conversation = first["conversation_id"]
    for text in ("turn two about pears", "turn three about plums"):
        assert (await arun_turn(conversation_id=conversation, user="bob", content=text,
                                model="recorded"))["type"] == "done"

    # when a new process compiles the graph anew and runs the fourth turn
    script = ("import asyncio, json, django; django.setup();"
              "from chat.graph.service import arun_turn;"
              f"print(json.dumps(asyncio.run(arun_turn(conversation_id={conversation!r}, "
              "user='bob', content='turn four about figs', model='recorded'))))")
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings",
               OPENCLAW_TEST_WORKER_DB=connection.settings_dict["NAME"],
               OPENCLAW_MEMORY_TOP_K="0")
    result = await sync_to_async(subprocess.run)(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
        timeout=120)

    # then the thread went on where it was: turn 4, with turns 1-3 in the model's context
    assert result.returncode == 0, result.stderr[-3000:]
    done = json.loads(result.stdout.strip().splitlines()[-1])
    assert done["type"] == "done" and done["content"] == "echo: turn four about figs"
    assert sent_user_texts(recorded) == ["turn one about apples", "turn two about pears",
                                         "turn three about plums", "turn four about figs"]
    state = await (await get_graph()).aget_state(thread_config(conversation))
    assert state.values["turns"] == 4
    assert state.values["message"]["content"] == "turn four about figs"
    assert (await Conversation.objects.aget(pk=conversation)).turns == 4


async def test_window_falls_back_to_the_database_when_the_cache_is_cleared(recorded):
    # given two turns, then the cache is wiped mid-conversation
    first = await arun_turn(conversation_id=None, user="carol", content="first words",
                            model="recorded")
    conversation = first["conversation_id"]
    await arun_turn(conversation_id=conversation, user="carol", content="second words",
                    model="recorded")
    await sync_to_async(cache.clear)()

    # when
    await arun_turn(conversation_id=conversation, user="carol", content="third words",
                    model="recorded")

    # then no turn is lost, and the window is cached again for the next turn
    assert sent_user_texts(recorded) == ["first words", "second words", "third words"]
    assistants = [m["content"] for m in recorded.requests[-1].body["messages"]
                  if m["role"] == "assistant"]
    assert assistants == ["echo: first words", "echo: second words"]
    await arun_turn(conversation_id=conversation, user="carol", content="fourth words",
                    model="recorded")
    assert sent_user_texts(recorded)[-2:] == ["third words", "fourth words"]


async def test_window_keeps_the_last_n_turns_the_current_one_included(recorded, settings):
    settings.OPENCLAW_MEMORY_WINDOW = 3
    conversation = None
    for number in range(1, 6):
        done = await arun_turn(conversation_id=conversation, user="dan",
                               content=f"message {number}", model="recorded")
        conversation = done["conversation_id"]

    assert sent_user_texts(recorded) == ["message 3", "message 4", "message 5"]


async def test_unknown_model_ends_with_an_error_event_and_keeps_the_message(echo):
    events = await collect(conversation_id=None, user="erin", content="anyone there?",
                           model="no-such-model")

    error = events[-1]
    assert error["type"] == "error" and error["code"] == "model_not_found"
    assert error["status"] == 404
    assert not [e for e in events if e["type"] == "node" and e["node"] == "remember"]
    stored = await sync_to_async(list)(Message.objects.filter(
        conversation_id=events[0]["id"]).values_list("role", "content"))
    assert stored == [("user", "anyone there?")]


async def test_another_users_conversation_is_not_found(echo):
    done = await arun_turn(conversation_id=None, user="frank", content="mine", model="echo")

    events = await collect(conversation_id=done["conversation_id"], user="mallory",
                           content="let me in", model="echo")

    assert events == [{"type": "error", "code": "conversation_not_found", "status": 404,
                       "message": events[0]["message"]}]


async def test_empty_content_is_refused_before_anything_is_stored(echo):
    events = await collect(conversation_id=None, user="gina", content="   ", model="echo")

    assert events[0]["type"] == "error" and events[0]["code"] == "invalid_content"
    assert await Conversation.objects.acount() == 0


async def test_blocked_message_ends_the_turn_and_leaves_later_context(recorded):
    # given a sensitive-word filter that blocks "forbidden"
    await Plugin.objects.acreate(name="sensitive_words", order=10,
                                 config={"words": ["forbidden"], "mode": "block"})
    await sync_to_async(plugin_chain.bump_version)()
    first = await arun_turn(conversation_id=None, user="hank", content="hello",
                            model="recorded")
    conversation = first["conversation_id"]

    # when
    events = await collect(conversation_id=conversation, user="hank",
                           content="say the forbidden word", model="recorded")
    after = await arun_turn(conversation_id=conversation, user="hank", content="hi again",
                            model="recorded")

    # then
    assert events[-1]["type"] == "error" and events[-1]["code"] == "blocked"
    assert any(e["type"] == "plugin" and e["plugin"] == "sensitive_words" for e in events)
    assert not [e for e in events if e["type"] == "token"]
    assert after["type"] == "done"
    assert sent_user_texts(recorded) == ["hello", "hi again"]


async def test_stream_filter_masks_tokens_and_post_process_masks_the_stored_answer(recorded):
    await Plugin.objects.acreate(name="sensitive_words", order=10,
                                 config={"words": ["secret"], "mode": "mask",
                                         "apply_to": "output"})
    await sync_to_async(plugin_chain.bump_version)()

    events = await collect(conversation_id=None, user="ivy", content="the secret plan",
                           model="recorded")

    streamed = "".join(e["text"] for e in events if e["type"] == "token")
    assert "secret" not in streamed and "******" in streamed
    done = events[-1]
    assert done["content"] == "echo: the ****** plan"
    stored = await Message.objects.aget(pk=done["message_id"])
    assert stored.content == "echo: the ****** plan"


async def test_checkpoints_hold_no_plaintext(echo):
    marker = "zebra-marker-7731 lives in the checkpoint"
    done = await arun_turn(conversation_id=None, user="jo", content=marker, model="echo")

    with psycopg.connect(checkpointer.conninfo()) as conn:
        dumps = [str(row) for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
                 for row in conn.execute(f"SELECT * FROM {table} WHERE thread_id = %s",
                                         [done["conversation_id"]])]

    assert dumps and not any("zebra-marker" in text for text in dumps)
    assert any("aesgcm:" in text for text in dumps)


def forget_checkpoints() -> None:
    """Checkpoint tables outlive each test's flush; rotation tests start without the
    rows earlier tests sealed with their own keys."""
    with psycopg.connect(checkpointer.conninfo(), autocommit=True) as conn:
        for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
            if conn.execute("SELECT to_regclass(%s)", [table]).fetchone()[0]:
                conn.execute(f"DELETE FROM {table}")


async def test_rotate_data_reencrypts_checkpoints_and_the_thread_still_loads(echo, settings):
    # given a turn checkpointed under key "old"
    await sync_to_async(forget_checkpoints)()
    old = parse_keys(new_key_spec("old"))
    settings.ENCRYPTION_KEYS = old
    done = await arun_turn(conversation_id=None, user="kim", content="before rotation",
                           model="echo")
    conversation = done["conversation_id"]

    # when "new" becomes the current key, the data is rotated and "old" is dropped
    settings.ENCRYPTION_KEYS = {**parse_keys(new_key_spec("new")), **old}
    report = await sync_to_async(rotate_data)()
    settings.ENCRYPTION_KEYS = {"new": settings.ENCRYPTION_KEYS["new"]}

    # then
    assert report.rotated["checkpoint_blobs"] > 0 and not report.failed
    with psycopg.connect(checkpointer.conninfo()) as conn:
        kinds = {row[0] for table in ("checkpoint_blobs", "checkpoint_writes")
                 for row in conn.execute(f"SELECT type FROM {table} WHERE thread_id = %s",
                                         [conversation])}
    assert kinds and all(kind.endswith("+aesgcm:new") for kind in kinds if "+" in kind)
    state = await (await get_graph()).aget_state(thread_config(conversation))
    assert state.values["message"]["content"] == "before rotation"
    after = await arun_turn(conversation_id=conversation, user="kim", content="after rotation",
                            model="echo")
    assert after["type"] == "done"


async def test_the_gateway_as_a_langchain_chat_model_streams_in_a_custom_graph(echo):
    """``GatewayChatModel`` is the gateway's LangChain face for graphs of one's own:
    its tokens reach LangGraph's ``messages`` stream mode, routed like any request."""
    from langgraph.graph import START, MessagesState, StateGraph

    from chat.graph.model import GatewayChatModel
    from inference.engines.base import ChatRequest
    from routing.gateway import GatewayMeta
    from routing.rules import RequestFacts

    meta = GatewayMeta()
    llm = GatewayChatModel(facts=RequestFacts(model="echo"), request=ChatRequest(messages=[]),
                           meta=meta)

    async def answer(state: MessagesState) -> dict:
        return {"messages": [await llm.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    graph = builder.compile()

    tokens = [chunk.content async for chunk, _meta in graph.astream(
        {"messages": [("user", "tokens one by one")]}, stream_mode="messages")
        if chunk.content]

    assert "".join(tokens) == "tokens one by one" and len(tokens) == 4
    assert meta.model == "echo" and meta.models == ["echo"]


async def test_a_checkpoint_written_by_another_process_is_not_hidden_by_the_kept_copy(echo):
    """The saver keeps each thread's head in memory and a turn skips the database when
    Redis announces that very head; another process that moves the thread on (its own
    saver, its own memory) announces its checkpoint first, so the next turn here
    starts from it."""
    from langgraph.checkpoint.base.id import uuid6

    from chat.graph.checkpointer import CachingSaver, head_key, serializer
    from core import shared_state

    done = await arun_turn(conversation_id=None, user="kim", content="one two",
                           model="echo")
    conversation = done["conversation_id"]
    saver = await checkpointer.get_saver()
    head = await saver.aget_tuple(thread_config(conversation))
    assert saver.kept(conversation) == head.checkpoint["id"]
    (announced,) = await shared_state.get_many([head_key(conversation)])
    assert announced == head.checkpoint["id"]

    # when another process writes a newer checkpoint of the thread (turns: 100)
    elsewhere = CachingSaver(saver.conn, serde=serializer())
    newer = {**head.checkpoint, "id": str(uuid6()),
             "channel_values": {**head.checkpoint["channel_values"], "turns": 100}}
    await elsewhere.aput(head.config, newer, {**head.metadata, "step": 99},
                         {"turns": elsewhere.get_next_version(None, None)})

    # then this process's next turn starts from it, not from the copy it kept
    await arun_turn(conversation_id=conversation, user="kim", content="three four",
                    model="echo")
    latest = await saver.aget_tuple(thread_config(conversation))
    assert latest.checkpoint["channel_values"]["turns"] == 101
    assert latest.parent_config["configurable"]["checkpoint_id"] == newer["id"]

    # and deleting the thread forgets the announcement
    await saver.adelete_thread(conversation)
    assert await shared_state.get_many([head_key(conversation)]) == [None]
