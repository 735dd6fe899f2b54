"""The studio websocket relays tokens in batches: the tokens that queue up while a
socket's relay is busy go out as one ``token`` frame — to the sender and to the other
sockets on the conversation alike — while an answer's first token is never held back
for more: it goes out as soon as the relay has it, ahead of the bookkeeping frames."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model

from chat.graph.events import MERGED_CHARS, merged
from routing.models import ModelEndpoint
from tests.chat.test_consumers import connect

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("no_recall", "closed_saver")]
BURST = 300  # tokens the loopback model writes at once
PACED = "slow-150+tokens-4"  # 150 ms before each of 4 tokens


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", password="pw-alice-1")


@pytest.fixture
def models(db, openai_server):
    ModelEndpoint.objects.create(name="echo", engine="echo")
    ModelEndpoint.objects.create(name="burst", engine="openai",
                                 upstream_model=f"tokens-{BURST}",
                                 endpoint_url=openai_server.url)
    ModelEndpoint.objects.create(name="paced", engine="openai", upstream_model=PACED,
                                 endpoint_url=openai_server.url)
    return openai_server


async def until_done(communicator: WebsocketCommunicator, request: str,
                     stamped: list[float] | None = None) -> list[dict]:
    """The frames of turn ``request`` up to its ``done`` (``stamped``: when each came)."""
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=20)
        if frame.get("id") != request:
            continue
        frames.append(frame)
        if stamped is not None:
            stamped.append(time.monotonic())
        if frame["type"] in ("done", "error"):
            assert frame["type"] == "done", frame
            return frames


def tokens(frames: list[dict]) -> list[str]:
    return [f["text"] for f in frames if f["type"] == "token"]


async def test_a_burst_of_tokens_goes_out_in_few_frames_to_every_socket(alice, models):
    # given: a conversation with a second socket on it (which the first knows of)
    first = await connect(alice)
    await first.send_json_to({"type": "message", "id": "m0", "content": "hi",
                              "model": "echo"})
    conversation = (await until_done(first, "m0"))[-1]["conversation"]
    second = await connect(alice, conversation)
    await second.receive_json_from(timeout=5)  # history
    await asyncio.sleep(0.2)  # the channel layer's news of it reaches the first socket

    # when: the model writes its whole answer at once
    await first.send_json_to({"type": "message", "id": "m1", "content": "hello big world",
                              "model": "burst"})
    mine = await until_done(first, "m1")
    theirs = await until_done(second, "m1")

    # then: every token is there, in order, in far fewer frames than tokens
    answer = mine[-1]["content"]
    assert len(answer.split()) == BURST
    assert "".join(tokens(mine)) == answer
    assert len(tokens(mine)) <= BURST // 10, len(tokens(mine))
    assert tokens(mine)[0].startswith("echo:")
    # and the other socket got the very same frames
    assert tokens(theirs) == tokens(mine)
    await first.disconnect()
    await second.disconnect()


async def test_paced_tokens_go_out_one_by_one_none_waiting_for_the_next(alice, models):
    ws = await connect(alice)

    # when: the model writes a token every 150 ms
    await ws.send_json_to({"type": "message", "id": "p", "content": "hello there",
                           "model": "paced"})
    stamped: list[float] = []
    frames = await until_done(ws, "p", stamped)

    # then: a frame each, the first holding exactly the first token, and each one
    # received before the model wrote the next (nothing waits to be batched)
    assert tokens(frames) == ["echo:", " hello", " there", " echo:"]
    written = models.requests_for(PACED)[-1].chunk_times[1:5]  # after the role chunk
    received = [t for t, f in zip(stamped, frames, strict=True) if f["type"] == "token"]
    assert all(got < after for got, after in zip(received, written[1:], strict=False)), \
        (received, written)
    assert received[0] - written[0] < 0.1
    await ws.disconnect()


async def test_the_first_token_is_sent_at_once_ahead_of_the_held_frames(
        alice, models, monkeypatch, settings):
    settings.OPENCLAW_WS_HOLD_MS = 5000  # bookkeeping frames wait for the first token
    gate = asyncio.Event()
    yielded: list[float] = []

    async def turn(**kwargs):
        # a turn whose model, after its first token, writes nothing until released
        yield {"type": "conversation", "id": str(uuid.uuid4()), "created": True}
        yield {"type": "node", "node": "generate", "phase": "start"}
        yielded.append(time.monotonic())
        yield {"type": "token", "text": "first"}
        await gate.wait()
        yield {"type": "token", "text": " second"}
        yield {"type": "done", "content": "first second"}

    monkeypatch.setattr("chat.consumers.astream_turn", turn)
    ws = await connect(alice)
    delays = []
    for n in range(3):
        gate.clear()
        await ws.send_json_to({"type": "message", "id": f"g{n}", "content": "go",
                               "model": "echo"})
        assert (await ws.receive_json_from(timeout=5))["type"] == "conversation"

        # then: while the model is still silent, its first token is there, alone and
        # first, and the frame held for it follows it
        token = await ws.receive_json_from(timeout=5)
        delays.append(time.monotonic() - yielded[-1])
        assert (token["type"], token["text"]) == ("token", "first")
        assert (await ws.receive_json_from(timeout=5))["type"] == "node"
        assert await ws.receive_nothing(timeout=0.05)

        # when the model goes on, so does the answer
        gate.set()
        rest = await until_done(ws, f"g{n}")
        assert [f["type"] for f in rest] == ["token", "done"] and rest[0]["text"] == " second"
    # sent as it came, not after a batching window
    assert min(delays) < 0.01, delays
    await ws.disconnect()


def test_merging_joins_runs_of_tokens_only_up_to_a_frame_size():
    # given: tokens around other events, one run longer than a merged piece may be
    many = [{"type": "token", "text": "x" * 1000} for _ in range(9)]
    events = [{"type": "token", "text": "a"}, {"type": "token", "text": "b"},
              {"type": "node", "node": "generate", "phase": "end"},
              {"type": "token", "text": "c"}, {"type": "token", "text": "d", "extra": 1},
              *many]

    # when
    out = merged(events)

    # then: order kept, runs joined, other events (and unusual tokens) left as they are
    assert out[:4] == [{"type": "token", "text": "ab"},
                       {"type": "node", "node": "generate", "phase": "end"},
                       {"type": "token", "text": "c"},
                       {"type": "token", "text": "d", "extra": 1}]
    assert [len(e["text"]) for e in out[4:]] == [4000, 4000, 1000]
    assert "".join(e["text"] for e in out[4:]) == "x" * 9000
    assert len(out[4]["text"]) <= MERGED_CHARS
