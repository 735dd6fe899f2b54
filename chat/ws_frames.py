"""The studio websocket's frames (docs/websocket.md): a client frame's fields checked
(``FrameError`` names what is wrong), its rate limited (``TokenBucket``), and a turn's
events stamped as the frames the studio reads (``TurnRelay``). ``chat.consumers`` is
the consumer that uses them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, Literal, overload

from django.conf import settings
from django.utils.translation import gettext as _
from langgraph.types import Durability

from core.text import lone_surrogate_at, object_id

from . import studio
from .conversations import check_content
from .v1 import validation

MAX_ID_CHARS = 64
# What a turn reports about itself; before its answer's first token, these frames wait.
CALL_EVENTS = frozenset({"tool_call", "tool_result"})
HELD = frozenset({"node", "memory", "plugin", "route", "branch", "tool", "annotation"})
PARAMS = set(validation.SAMPLING)
_TEXT = json.JSONEncoder(ensure_ascii=False)  # a str as JSON (C), for token frames


class FrameError(Exception):
    """A client frame the protocol refuses: answered with an ``error`` frame (its
    ``param`` names the field at fault, when one is)."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


class TokenBucket:
    """``rate`` frames a second sustained, ``burst`` at once."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, float(max(1, burst))
        self.tokens, self.stamp = self.burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def request_id_of(frame: dict[str, Any]) -> str | None:
    """The client's ``id`` for this request (a short string or number), if it gave one."""
    value = frame.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int) or \
            len(str(value)) > MAX_ID_CHARS or lone_surrogate_at(value) is not None:
        raise FrameError("invalid_id", _("“id” must be a string of at most %(n)d "
                                         "characters or a number.") % {"n": MAX_ID_CHARS},
                         "id")
    return str(value)


def check_text(frame: dict[str, Any]) -> None:
    """Refuse a frame with a string that is not text (an unpaired surrogate: nothing can
    store it or send it back), naming the field, as ``/v1`` refuses such a body."""
    try:
        validation.text(frame)
    except validation.InvalidBody as exc:
        raise FrameError("invalid_text", exc.message, exc.param) from None


class TurnRelay:
    """Stamps a turn's events as protocol frames: the request ``id``, the
    conversation, node timings, time to first token and total latency."""

    def __init__(self, request_id: str, conversation_id: str | None):
        self.request_id, self.conversation_id = request_id, conversation_id
        self.started = time.perf_counter()
        self.node_started: dict[str, float] = {}
        self.first_token_ms: float | None = None
        self.text: list[str] = []
        self.model: str | None = None
        self.storing = False  # the graph's remember node stores the answer itself
        self.finished = False  # its last frame (done or error) was relayed
        self.begun = False  # the graph service began the turn (``conversation``)
        self.answering = False  # the answer's first token was sent
        self.held: list[tuple[dict[str, Any], bool]] = []  # frames waiting for it
        self.timer: asyncio.TimerHandle | None = None  # when they stop waiting
        self.flushing: asyncio.Future | None = None  # the timer's flush
        self._tail = ""  # a token frame's JSON after its text
        self._tail_of: str | None | bool = False  # the conversation it names

    def _ms(self, since: float) -> float:
        return round((time.perf_counter() - since) * 1000, 2)

    def hold(self, frame: dict[str, Any], broadcast: bool,
             flush: Callable[[TurnRelay], None]) -> bool:
        """Keep a bookkeeping frame (``HELD``) back until the answer's first token — or
        ``OPENCLAW_WS_HOLD_MS`` at most, when ``flush`` is called — so that token is never
        queued behind such frames (each is a write of its own); their timings were
        taken when their events happened. False: send it now."""
        if frame["type"] not in HELD or self.answering or settings.OPENCLAW_WS_HOLD_MS <= 0:
            return False
        self.held.append((frame, broadcast))
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(
                settings.OPENCLAW_WS_HOLD_MS / 1000, flush, self)
        return True

    def release(self) -> list[tuple[dict[str, Any], bool]]:
        """The held frames, to send now (the hold's timer stopped)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        held, self.held = self.held, []
        return held

    def busy(self) -> bool:
        """Frames are held, or their flush is under way: a frame sent now waits for it."""
        return bool(self.held) or self.timer is not None or (
            self.flushing is not None and not self.flushing.done())

    def token(self, text: str) -> str:
        """A ``token`` frame's JSON (see ``token_frame``), recording its text. Built from
        a head and tail made once per turn: of a turn's frames, most are tokens."""
        self._answered(text)
        if self._tail_of != self.conversation_id:
            self._tail = (f', "id": {_TEXT.encode(self.request_id)}, '
                          f'"conversation": {_TEXT.encode(self.conversation_id)}}}')
            self._tail_of = self.conversation_id
        return '{"type": "token", "text": ' + _TEXT.encode(text) + self._tail

    def _answered(self, text: str) -> None:
        if self.first_token_ms is None:
            self.first_token_ms = self._ms(self.started)
        self.text.append(text)

    def token_frame(self, text: str) -> dict[str, Any]:
        """A ``token`` frame: the next piece of the answer (one token or several)."""
        return {"type": "token", "text": text, "id": self.request_id,
                "conversation": self.conversation_id}

    def frame(self, event: dict[str, Any]) -> dict[str, Any]:
        kind = event.get("type")
        frame = {**event, "id": self.request_id}
        if kind in CALL_EVENTS:  # the frame's id is the request's: the call's goes apart
            frame["call_id"] = event["id"]
        if kind == "conversation":
            self.conversation_id, self.begun = event["id"], True
            frame["id"], frame["conversation"] = self.request_id, event["id"]
        frame["conversation"] = self.conversation_id
        if kind == "node":
            if event.get("phase") == "start":
                self.storing = self.storing or event["node"] == "remember"
                self.node_started[event["node"]] = time.perf_counter()
                frame["at_ms"] = self._ms(self.started)
            elif event["node"] in self.node_started:
                frame["ms"] = self._ms(self.node_started[event["node"]])
        elif kind == "token":
            self._answered(event.get("text", ""))
        elif kind == "route":
            self.model = event.get("target")
        elif kind == "done":
            frame["latency_ms"] = self._ms(self.started)
            frame["ttft_ms"] = self.first_token_ms
        return frame

    def stopped(self) -> dict[str, Any]:
        return {"type": "done", "id": self.request_id, "conversation": self.conversation_id,
                "stopped": True, "message_id": None, "content": "".join(self.text),
                "latency_ms": self._ms(self.started), "ttft_ms": self.first_token_ms}


@overload
def model_of(frame: dict, required: Literal[True] = True) -> str: ...


@overload
def model_of(frame: dict, required: bool) -> str | None: ...


def model_of(frame: dict, required: bool = True) -> str | None:
    """The frame's model name (None only when not ``required`` and absent), or
    ``FrameError``."""
    model = frame.get("model")
    if model is None and not required:
        return None
    name = object_id(model)
    if name is None or not name.strip():
        raise FrameError("invalid_model", _("“model” must be a model name from the "
                                            "registry."), "model")
    return name


def workflow_of(frame: dict) -> str | None:
    """The workflow's slug, or None: the conversation's, else the default one."""
    workflow = frame.get("workflow")
    if workflow in (None, "", studio.BUILT_IN):
        return None
    if object_id(workflow, 100) is None:
        raise FrameError("unknown_workflow", _("“workflow” must be a workflow's slug."),
                         "workflow")
    return workflow


MAX_VERSION = 2**31 - 1


def version_of(frame: dict, workflow: str | None) -> int | None:
    """A ``message`` frame's ``version``: the saved version of ``workflow`` (the
    frame's slug) that the turn runs, draft or published; None when absent (the live
    one). Who may ask for it is the consumer's to check."""
    version = frame.get("version")
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int) or \
            not 1 <= version <= MAX_VERSION:
        raise FrameError("invalid_version", _("“version” must be a positive whole number: "
                                              "the number of a saved version of the "
                                              "workflow."), "version")
    if workflow is None:
        raise FrameError("invalid_version", _("“version” needs “workflow”: the slug of the "
                                              "workflow whose version runs."), "version")
    return version


MAX_TOOLS = 64  # tools one message may enable


def tools_of(frame: dict) -> list[str] | None:
    """The tools the user enabled for the conversation (names; the run offers those the
    user may use), or None when the frame does not say (the thread's stay)."""
    tools = frame.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS or not all(
            object_id(name, 64) is not None for name in tools):
        raise FrameError("invalid_tools", _("“tools” must be a list of at most %(n)d tool "
                                            "names.") % {"n": MAX_TOOLS}, "tools")
    return list(dict.fromkeys(tools))


def turn_of(frame: dict) -> tuple[str, str | None, dict[str, Any], list[str] | None]:
    """A ``message`` frame's model, workflow, sampling params and tools."""
    return model_of(frame), workflow_of(frame), params_of(frame), tools_of(frame)


def trace_of(frame: dict) -> Durability | None:
    """A ``message`` / ``approve`` / ``reject`` frame's ``trace``: true runs the turn
    with a checkpoint after every node (durability "sync"), so the editor can show
    and fork each step; absent or false: ``OPENCLAW_GRAPH_DURABILITY``."""
    trace = frame.get("trace", False)
    if not isinstance(trace, bool):
        raise FrameError("invalid_trace", _("“trace” must be true or false."), "trace")
    return "sync" if trace else None


def decision_of(frame: dict) -> dict[str, Any]:
    """The resume value of an ``approve`` / ``reject`` frame."""
    if frame["type"] == "reject":
        reason = frame.get("reason", "")
        if not isinstance(reason, str):
            raise FrameError("invalid_reason", _("“reason” must be a string."), "reason")
        return {"action": "reject", "reason": reason}
    if frame.get("content") is None:
        return {"action": "approve"}
    return {"action": "edit", "content": check_content(frame.get("content"))}


def params_of(frame: dict) -> dict[str, Any]:
    """The frame's sampling ``params``, checked by the rules of ``/v1`` chat bodies
    (``chat.v1.validation.sampling``); ``FrameError`` names the one at fault."""
    params = frame.get("params")
    if params is None:
        return {}
    if not isinstance(params, dict) or set(params) - PARAMS:
        raise FrameError("invalid_params", _("“params” may set only: %(names)s.")
                         % {"names": ", ".join(sorted(PARAMS))}, "params")
    try:
        checked = validation.sampling(params)
    except validation.InvalidBody as exc:
        raise FrameError("invalid_params", exc.message, f"params.{exc.param}") from None
    return {name: value for name, value in checked.items() if value is not None}
