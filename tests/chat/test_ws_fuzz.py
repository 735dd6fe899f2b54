"""10,000 fuzzed frames against the studio websocket of a live web server: random JSON,
wrong types, huge strings, deep nesting, binary. Each bad frame is answered with one
``error`` frame (carrying the frame's ``id`` when it had a usable one), no connection
drops, nothing fails inside the consumer (no ``internal_error``), and the server still
chats afterwards. Bounded: a fixed seed, a fixed count, a time limit."""

from __future__ import annotations

import asyncio
import json
import os
import random
import string
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import websockets

from routing.keys import create_key
from routing.models import ModelEndpoint

pytestmark = pytest.mark.django_db(transaction=True)
FRAMES = 10_000
CONNECTIONS = 8
MAX_FRAME = 64 * 1024
TYPES = ["message", "stop", "regenerate", "fork", "approve", "reject", "history", "ping"]


@pytest.fixture(scope="module", autouse=True)
def fuzz_server_env() -> Iterator[None]:
    """The server this module starts lets frames through its rate limit (the limit has
    its own test), so every frame reaches the checks being fuzzed."""
    names = {"OPENCLAW_WS_RATE": "1000000", "OPENCLAW_WS_BURST": "1000000",
             "OPENCLAW_WS_MAX_FRAME": str(MAX_FRAME), "OPENCLAW_MEMORY_TOP_K": "0"}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _text(rng: random.Random, size: int) -> str:
    alphabet = string.printable + "中文€😀\u0000\u202e\ufeff"
    return "".join(rng.choice(alphabet) for _ in range(size))


def _junk(rng: random.Random, depth: int = 0):
    """A random JSON value."""
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, -(2**70), 1.5e308, -0.0, rng.randint(-9, 9**9)])
    if kind == 3:
        return _text(rng, rng.randrange(0, 40))
    if kind == 4:
        return ""
    if kind == 5:
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {_text(rng, 5): _junk(rng, depth + 1) for _ in range(rng.randrange(4))}


def _not_text(rng: random.Random):
    """A value that is not valid message content (nor a model name)."""
    return rng.choice([None, 0, 3.5, True, [], {}, "", "   ", [1, 2], [{"no": "type"}],
                       {"type": "text"}, {"k": _junk(rng)}, [_junk(rng), 1]])


def bad_frame(rng: random.Random, n: int,
              existing: bool = False) -> tuple[str | bytes, str | None]:
    """A frame the protocol must refuse, and the ``id`` its error must carry
    (``existing``: the socket is on a conversation that has messages)."""
    case = n % 12
    if case == 0:
        return rng.randbytes(rng.randrange(1, 300)), None
    if case == 1:  # not JSON
        return rng.choice(["{", "}", "nul", "[1,", '{"type": "ping"', "\u0000", "'x'",
                           _text(rng, 30), "NaNa", '{"a": 1}}']), None
    if case == 2:  # JSON, not an object
        return json.dumps(rng.choice([None, 1, "ping", [], [{"type": "ping"}],
                                      _junk(rng)])), None
    if case == 3:  # huge
        return json.dumps({"type": "message", "id": "h", "content": "x" * (
            MAX_FRAME + rng.randrange(1, 4 * MAX_FRAME)), "model": "echo"}), None
    if case == 4:  # deeply nested, small
        depth = rng.randrange(2000, 20000)
        return "[" * depth + "]" * depth, None
    if case == 5:  # an object with no known type
        frame = {_text(rng, 6): _junk(rng) for _ in range(rng.randrange(3))}
        frame["type"] = rng.choice([None, 1, [], {}, "", "PING", "message ", _text(rng, 8)])
        return json.dumps(frame), None
    if case == 6:  # a bad id
        frame = {"type": rng.choice(TYPES),
                 "id": rng.choice([{}, [], True, 1.5, "x" * 65, {"id": 1}])}
        return json.dumps(frame), None
    request = f"f{n}"
    if case in (7, 8):  # message with wrong types
        frame = rng.choice([
            {"type": "message", "id": request, "content": _not_text(rng), "model": "echo"},
            {"type": "message", "id": request, "content": "hi", "model": rng.choice(
                [None, 1, [], {}, "", "  ", "m" * 201])},
            {"type": "message", "id": request, "content": "hi", "model": "echo",
             "params": rng.choice([1, "x", [], {"evil": 1}, {"temperature": 1, "rm": 1}])},
            {"type": "message", "id": request, "content": "hi", "model": "echo",
             "workflow": rng.choice([1, "no-such-workflow", [], {}, "x" * 101])},
        ])
        return json.dumps(frame), request
    if existing:  # a branch from a message that is not there; nothing to approve
        frame = rng.choice([
            {"type": "fork", "id": request, "message_id": rng.choice(
                [None, -1, 0, 2**70, float("inf"), 1.5, "12a", "9" * 40, "", [], {}, True,
                 _junk(rng), 10**12])},
            {"type": rng.choice(["approve", "reject"]), "id": request, "value": _junk(rng)},
        ])
        return json.dumps(frame), request
    # no conversation yet, nothing running, nothing waiting for approval
    kind = rng.choice(["stop", "regenerate", "fork", "approve", "reject", "history"])
    frame = {"type": kind, "id": request, **{_text(rng, 4): _junk(rng) for _ in range(2)}}
    return json.dumps(frame), request


async def _fuzz_one(url: str, secret: str, start: int, count: int, origin: str,
                    existing: bool) -> Counter:
    rng = random.Random(start)
    codes: Counter = Counter()
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {secret}"},
                                  origin=origin, max_size=2**22) as ws:
        if existing:
            assert json.loads(await ws.recv())["type"] == "history"
        for n in range(start, start + count):
            frame, request = bad_frame(rng, n, existing)
            await ws.send(frame)
            answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert answer["type"] == "error", (frame[:200], answer)
            assert answer["id"] == request, (frame[:200], answer)
            assert isinstance(answer["message"], str) and answer["message"]
            codes[answer["code"]] += 1
        await ws.send(json.dumps({"type": "ping", "id": "still-here"}))
        assert json.loads(await ws.recv())["type"] == "pong"
    return codes


async def test_ten_thousand_bad_frames_each_get_an_error_and_nothing_breaks(
        live_server_url, openai_server):
    # given
    from asgiref.sync import sync_to_async

    await ModelEndpoint.objects.acreate(name="echo", engine="echo")
    _key, secret = await sync_to_async(create_key)("fuzz")
    base = live_server_url.replace("http://", "ws://") + "/ws/chat/"
    url = base + "new/"
    conversation = await _chat(url, secret, live_server_url, "a conversation to fuzz")
    share = FRAMES // CONNECTIONS
    started = time.monotonic()

    # when: half the sockets on a new conversation, half on one with messages
    results = await asyncio.wait_for(asyncio.gather(*(
        _fuzz_one(f"{base}{conversation}/" if i % 2 else url, secret, i * share, share,
                  live_server_url, existing=bool(i % 2))
        for i in range(CONNECTIONS))), 180)

    # then: every frame answered with an error, none of them a failure inside
    codes = sum(results, Counter())
    assert sum(codes.values()) == FRAMES
    assert "internal_error" not in codes, codes
    assert {"binary_frame", "invalid_json", "invalid_frame", "frame_too_large",
            "unknown_type", "invalid_id", "invalid_content", "invalid_model",
            "no_conversation", "not_waiting", "message_not_found"} <= set(codes), codes
    assert time.monotonic() - started < 120

    # and the server still chats
    assert await _chat(url, secret, live_server_url, "still fine")


async def _chat(url: str, secret: str, origin: str, text: str) -> str:
    """One turn with the echo model; its conversation's id."""
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {secret}"},
                                  origin=origin) as ws:
        await ws.send(json.dumps({"type": "message", "id": "ok", "content": text,
                                  "model": "echo"}))
        while (frame := json.loads(await asyncio.wait_for(ws.recv(), 20)))["type"] != "done":
            assert frame["type"] != "error", frame
        assert frame["content"] == text
        return frame["conversation"]
