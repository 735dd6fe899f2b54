"""The studio websocket consumer through ``channels.testing.WebsocketCommunicator``, on
the real PostgreSQL (conversations, checkpoints), Redis (channel layer) and the
loopback OpenAI server: streaming frames stamped with the request id, refusals that
leave the connection usable, stop, disconnect, fork, regenerate and API keys."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model

from chat.models import Conversation, Message
from chat.websocket_urls import websocket_urlpatterns
from routing.keys import create_key
from routing.models import ModelEndpoint

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("no_recall", "closed_saver")]
ORIGIN = (b"origin", b"http://127.0.0.1")


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", password="pw-alice-1")


@pytest.fixture
def models(db, openai_server):
    ModelEndpoint.objects.create(name="echo", engine="echo")
    ModelEndpoint.objects.create(name="slow", engine="openai", upstream_model="slow-100",
                                 endpoint_url=openai_server.url)
    return openai_server


async def connect(user, conversation: str = "new", headers=()) -> WebsocketCommunicator:
    app = URLRouter(websocket_urlpatterns)
    communicator = WebsocketCommunicator(app, f"/ws/chat/{conversation}/",
                                         headers=[ORIGIN, *headers])
    if user is not None:
        communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def until(communicator: WebsocketCommunicator, kind: str, timeout: float = 20,
                request: str | None = None) -> list:
    """Frames up to and including the first of type ``kind`` (of request ``request``
    only, when given: a socket that just joined may still get an earlier turn's tail)."""
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        if request is not None and frame.get("id") != request:
            continue
        frames.append(frame)
        if frame["type"] == kind:
            return frames


async def test_message_streams_frames_each_carrying_the_request_id(alice, models):
    ws = await connect(alice)

    # when
    await ws.send_json_to({"type": "message", "id": "m1", "content": "hello there world",
                           "model": "echo"})
    frames = await until(ws, "done")

    # then
    assert {f["id"] for f in frames} == {"m1"}
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "conversation" and "route" in kinds and "memory" in kinds
    assert "".join(f["text"] for f in frames if f["type"] == "token") == frames[-1]["content"]
    ends = [f for f in frames if f["type"] == "node" and f["phase"] == "end"]
    assert [f["node"] for f in ends][:3] == ["recall", "pre_process", "generate"]
    assert all(f["ms"] >= 0 for f in ends)
    done = frames[-1]
    assert done["message_id"] and 0 < done["latency_ms"] < 30_000
    assert 0 < done["ttft_ms"] <= done["latency_ms"]
    conversation = frames[0]["conversation"]
    assert await Message.objects.filter(conversation_id=conversation).acount() == 2
    await ws.disconnect()


async def test_bookkeeping_frames_wait_for_the_first_token_at_most_the_hold(
        alice, models, settings):
    settings.OPENCLAW_WS_HOLD_MS = 25
    ws = await connect(alice)

    # a fast answer: conversation first, done last, every node's start and end there
    await ws.send_json_to({"type": "message", "id": "f", "content": "hello there world",
                           "model": "echo"})
    frames = await until(ws, "done")
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "conversation" and kinds[-1] == "done" and "token" in kinds
    nodes = [(f["node"], f["phase"]) for f in frames if f["type"] == "node"]
    assert nodes == [(name, phase) for name in ("recall", "pre_process", "generate",
                                                "post_process", "remember")
                     for phase in ("start", "end")]

    # a slow first token (100 ms): what happened before it goes out when the hold ends
    await ws.send_json_to({"type": "message", "id": "s", "content": "hello slow world",
                           "model": "slow"})
    frames = await until(ws, "done", request="s")
    kinds = [f["type"] for f in frames]
    assert kinds.index("node") < kinds.index("memory") < kinds.index("token")
    # the route, decided as the answer started, follows its first token
    assert kinds.index("route") == kinds.index("token") + 1
    started = next(f for f in frames if f["type"] == "node" and f["node"] == "generate")
    assert started["at_ms"] < 100  # stamped when it happened, not when sent
    await ws.disconnect()


async def test_every_malformed_frame_gets_an_error_and_the_connection_stays_usable(
        alice, models, settings):
    settings.OPENCLAW_WS_MAX_FRAME = 1024
    ws = await connect(alice)
    bad = [
        ("binary_frame", dict(bytes_data=b"\x00\xff")),
        ("invalid_json", dict(text_data="{nope")),
        ("invalid_frame", dict(text_data="[1, 2]")),
        ("unknown_type", dict(text_data='{"type": "explode"}')),
        ("unknown_type", dict(text_data='{"type": ["ping"]}')),  # unhashable
        ("unknown_workflow", dict(text_data='{"type": "message", "content": "hi", '
                                            '"model": "echo", "workflow": {}}')),
        ("invalid_id", dict(text_data='{"type": "ping", "id": {"a": 1}}')),
        ("frame_too_large", dict(text_data=json.dumps({"type": "message",
                                                       "content": "x" * 5000}))),
        ("invalid_content", dict(text_data='{"type": "message", "content": 42}')),
        ("invalid_model", dict(text_data='{"type": "message", "content": "hi", "model": 7}')),
        ("invalid_params", dict(text_data='{"type": "message", "content": "hi", '
                                          '"model": "echo", "params": {"evil": 1}}')),
        ("not_running", dict(text_data='{"type": "stop"}')),
        ("no_conversation", dict(text_data='{"type": "regenerate"}')),
        ("no_conversation", dict(text_data='{"type": "approve", "id": "x"}')),
    ]
    for expected, frame in bad:
        # when
        await ws.send_to(**frame)
        answer = await ws.receive_json_from(timeout=5)

        # then
        assert answer["type"] == "error" and answer["code"] == expected, (expected, answer)
        assert answer["message"]
    await ws.send_json_to({"type": "ping", "id": 7})
    assert await ws.receive_json_from(timeout=5) == {"type": "pong", "id": "7",
                                                     "time": pytest.approx(0, abs=1e10)}
    await ws.disconnect()


async def test_frames_beyond_the_rate_limit_are_refused(alice, models, settings):
    settings.OPENCLAW_WS_RATE, settings.OPENCLAW_WS_BURST = 0.01, 3
    ws = await connect(alice)

    # when
    for n in range(5):
        await ws.send_json_to({"type": "ping", "id": n})
    answers = [await ws.receive_json_from(timeout=5) for _ in range(5)]

    # then
    assert [a["type"] for a in answers] == ["pong"] * 3 + ["error"] * 2
    assert answers[-1]["code"] == "rate_limited" and answers[-1]["id"] is None
    await ws.disconnect()


async def test_anonymous_connection_is_refused_with_4401():
    ws = await connect(None)

    # then
    answer = await ws.receive_json_from(timeout=5)
    assert answer["code"] == "unauthorized"
    assert (await ws.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4401}


async def test_foreign_origin_is_refused_by_the_site(alice):
    from openclaw_site.asgi import application

    ws = WebsocketCommunicator(application, "/ws/chat/new/",
                               headers=[(b"origin", b"http://evil.example")])

    # when
    connected, _ = await ws.connect()

    # then
    assert not connected


async def test_api_key_in_the_handshake_authenticates(db, models):
    _key, secret = await sync_to_async(create_key)("studio-client")
    ws = await connect(None, headers=[(b"authorization", f"Bearer {secret}".encode())])

    # when
    await ws.send_json_to({"type": "message", "id": "k", "content": "hi key", "model": "echo"})
    done = (await until(ws, "done"))[-1]

    # then
    conversation = await Conversation.objects.aget(pk=done["conversation"])
    assert conversation.user.startswith("key:")
    await ws.disconnect()


async def test_someone_elses_conversation_is_refused_with_4404(alice, models):
    other = await Conversation.objects.acreate(user="mallory", title="secret")
    ws = await connect(alice, str(other.pk))

    # then
    assert (await ws.receive_json_from(timeout=5))["code"] == "conversation_not_found"
    assert (await ws.receive_output(timeout=5))["code"] == 4404


async def test_stop_cancels_the_turn_and_the_connection_goes_on(alice, models):
    ws = await connect(alice)
    await ws.send_json_to({"type": "message", "id": "s", "content": " ".join(["w"] * 40),
                           "model": "slow"})
    await until(ws, "token")

    # when
    await ws.send_json_to({"type": "stop", "id": "stop-1"})
    done = (await until(ws, "done", timeout=5))[-1]

    # then
    assert done["stopped"] is True and done["id"] == "s"
    assert 0 < len(done["content"].split()) < 41
    kept = await Message.objects.aget(pk=done["message_id"])
    assert kept.content == done["content"] and kept.model == "slow"
    await ws.send_json_to({"type": "message", "id": "again", "content": "after stop",
                           "model": "echo"})
    assert (await until(ws, "done"))[-1]["content"] == "after stop"
    await ws.disconnect()


async def test_a_second_message_while_generating_is_refused_as_busy(alice, models):
    ws = await connect(alice)
    await ws.send_json_to({"type": "message", "id": "a", "content": "one two three four",
                           "model": "slow"})
    await until(ws, "conversation")

    # when
    await ws.send_json_to({"type": "message", "id": "b", "content": "x", "model": "echo"})
    frames = await until(ws, "error")

    # then
    assert frames[-1]["code"] == "busy" and frames[-1]["id"] == "b"
    assert (await until(ws, "done"))[-1]["id"] == "a"
    await ws.disconnect()


async def _stored_answers(conversation: str) -> int:
    return await Message.objects.filter(conversation_id=conversation,
                                        role="assistant").acount()


async def test_disconnect_mid_generation_cancels_the_run(alice, models):
    ws = await connect(alice)
    await ws.send_json_to({"type": "message", "content": "a b c d e f g h", "model": "slow"})
    conversation = (await until(ws, "token"))[0]["conversation"]

    # when
    await ws.disconnect()
    await asyncio.sleep(1.2)  # the whole answer would have been written by now

    # then: what had streamed is kept, nothing after it
    answers = [m async for m in Message.objects.filter(conversation_id=conversation,
                                                       role="assistant")]
    assert len(answers) == 1 and len(answers[0].content.split()) < 5


async def test_with_cancel_off_the_run_finishes_and_a_reconnect_shows_it(
        alice, models, settings):
    settings.OPENCLAW_WS_CANCEL_ON_DISCONNECT = False
    ws = await connect(alice)
    await ws.send_json_to({"type": "message", "content": "a b c d e", "model": "slow"})
    conversation = (await until(ws, "token"))[0]["conversation"]

    # when
    await ws.disconnect()
    for _ in range(100):
        if await _stored_answers(conversation):
            break
        await asyncio.sleep(0.1)
    again = await connect(alice, conversation)

    # then
    past = await again.receive_json_from(timeout=5)
    assert past["type"] == "history" and past["conversation"] == conversation
    assert [m["role"] for m in past["messages"]] == ["user", "assistant"]
    assert past["messages"][1]["content"] == "echo: a b c d e"
    await again.disconnect()


async def test_two_sockets_on_one_conversation_both_see_the_stream(alice, models):
    first = await connect(alice)
    await first.send_json_to({"type": "message", "content": "one", "model": "echo"})
    conversation = (await until(first, "done"))[-1]["conversation"]
    second = await connect(alice, conversation)
    await second.receive_json_from(timeout=5)  # history
    # The first socket learns of the second from the channel layer, beside its own
    # frames: a ping answered after that news has had time to arrive.
    await asyncio.sleep(0.2)
    await first.send_json_to({"type": "ping"})
    assert (await first.receive_json_from(timeout=5))["type"] == "pong"

    # when
    await first.send_json_to({"type": "message", "id": "t2", "content": "two words",
                              "model": "echo"})
    mine = await until(first, "done")
    theirs = await until(second, "done", request="t2")

    # then
    assert [f["type"] for f in theirs] == [f["type"] for f in mine], (mine, theirs)
    assert theirs[-1]["content"] == "two words" and theirs[-1]["id"] == "t2"
    await first.disconnect()
    await second.disconnect()


async def test_fork_copies_the_conversation_up_to_the_message(alice, models):
    ws = await connect(alice)
    await ws.send_json_to({"type": "message", "content": "first question", "model": "echo"})
    first = (await until(ws, "done"))[-1]
    await ws.send_json_to({"type": "message", "content": "second question", "model": "echo"})
    await until(ws, "done")

    # when
    await ws.send_json_to({"type": "fork", "id": "f", "message_id": first["message_id"]})
    forked = await ws.receive_json_from(timeout=5)

    # then
    assert forked["type"] == "forked" and forked["id"] == "f"
    copied = [m async for m in Message.objects.filter(
        conversation_id=forked["fork"]["id"]).order_by("turn", "id")]
    assert [m.value for m in copied] == ["first question", first["content"]]
    await ws.send_json_to({"type": "fork", "message_id": "nope"})
    assert (await ws.receive_json_from(timeout=5))["code"] == "message_not_found"
    await ws.disconnect()


async def test_regenerate_answers_the_last_question_again(alice, models):
    ws = await connect(alice)
    await ws.send_json_to({"type": "message", "content": "same again", "model": "echo"})
    conversation = (await until(ws, "done"))[-1]["conversation"]

    # when
    await ws.send_json_to({"type": "regenerate", "id": "r"})
    frames = await until(ws, "done")

    # then
    assert frames[0]["type"] == "regenerate" and frames[-1]["content"] == "same again"
    rows = [m async for m in Message.objects.filter(conversation_id=conversation)
            .order_by("turn", "id")]
    assert [(m.turn, m.in_context) for m in rows] == [(1, False), (1, False), (2, True),
                                                      (2, True)]
    await ws.disconnect()


async def test_approve_with_nothing_waiting_is_refused_and_stamped(alice, models):
    ws = await connect(alice)
    await ws.send_json_to({"type": "message", "content": "hello", "model": "echo"})
    await until(ws, "done")

    # when
    await ws.send_json_to({"type": "approve", "id": "ok?"})
    answer = (await until(ws, "error"))[-1]

    # then
    assert answer["code"] == "not_waiting" and answer["id"] == "ok?"
    await ws.send_json_to({"type": "reject", "id": "r", "reason": 5})
    assert (await ws.receive_json_from(timeout=5))["code"] == "invalid_reason"
    await ws.disconnect()


async def test_a_run_waiting_for_approval_is_approved_over_the_socket(alice, models):
    from tests.chat.test_workflows import reviewed

    await sync_to_async(reviewed)()  # answer → human_approval → store
    ws = await connect(alice)

    # when: a turn of the workflow stops at the approval node
    await ws.send_json_to({"type": "message", "id": "w", "content": "draft please",
                           "model": "echo", "workflow": "reviewed"})
    waiting = (await until(ws, "waiting"))[-1]

    # then: approving resumes it and stores the answer
    assert waiting["id"] == "w" and waiting["interrupts"]
    await ws.send_json_to({"type": "approve", "id": "yes"})
    done = (await until(ws, "done"))[-1]
    assert done["id"] == "yes" and done["content"] == "draft please"
    assert (await Message.objects.aget(pk=done["message_id"])).content == "draft please"

    # and a rejected run ends in an error for its sender
    await ws.send_json_to({"type": "message", "id": "w2", "content": "another draft",
                           "model": "echo"})
    second = (await until(ws, "waiting"))[-1]
    again = await connect(alice, second["conversation"])  # a reload shows what waits
    assert (await again.receive_json_from(timeout=5))["waiting"]["node"] == "review"
    await again.disconnect()
    await ws.send_json_to({"type": "reject", "id": "no", "reason": "not now"})
    assert (await until(ws, "error"))[-1]["id"] == "no"
    await ws.disconnect()
