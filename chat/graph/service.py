"""Run one conversation turn through the graph and stream what happens as events.

``astream_turn`` stores the user's message (creating the conversation when asked),
runs the compiled graph on the conversation's thread (checkpointed in PostgreSQL, so
a turn after a restart resumes the thread) and yields JSON-serialisable events:

* ``{"type": "conversation", "id"}`` first;
* ``{"type": "node", "node", "phase": "start" | "end"}`` around each node;
* ``{"type": "memory", "hits"}``, ``{"type": "plugin", "plugin", "action", "detail",
  "phase"}``, ``{"type": "route", "rule", "target", "fallbacks", "explanation"}``;
* ``{"type": "token", "text"}`` as the model streams;
* ``{"type": "usage", "model", "prompt_tokens", "completion_tokens", "total_tokens"}``;
* last, ``{"type": "done", "message_id", "content", "model", …}`` or
  ``{"type": "error", "code", "message", "status"}``.

The graph streams in three modes: ``messages`` (tokens, through LangChain's callbacks),
``updates`` (node ends, and the final state) and ``custom`` (the rest).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.utils.translation import gettext as _
from langchain_core.messages import AIMessageChunk
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph.state import CompiledStateGraph

from ..conversations import ConversationError, start_turn
from .checkpointer import get_saver
from .context import Context
from .graph import compile_graph

logger = logging.getLogger(__name__)

STREAM_MODES = ["messages", "updates", "custom"]


_graphs: weakref.WeakKeyDictionary[AsyncPostgresSaver, CompiledStateGraph] = (
    weakref.WeakKeyDictionary())


async def get_graph() -> CompiledStateGraph:
    """The graph compiled with this event loop's checkpointer (once per checkpointer)."""
    saver = await get_saver()
    graph = _graphs.get(saver)
    if graph is None:
        graph = _graphs[saver] = compile_graph(saver)
    return graph


def thread_config(conversation_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": conversation_id}}


async def astream_turn(*, conversation_id: str | None, user: str, content: str | list[dict],
                       model: str, api_key: str = "",
                       params: dict | None = None) -> AsyncIterator[dict]:
    """One turn of ``user``'s conversation (a new one when ``conversation_id`` is None)
    with ``content`` as the user's message, as events (see the module's docstring)."""
    if not isinstance(model, str) or not model:
        yield _error("invalid_model", _("“model” must be a non-empty string."))
        return
    try:
        started = await sync_to_async(start_turn)(conversation_id, user, content, model)
    except ConversationError as exc:
        yield _error(exc.code, exc.message, 404 if exc.code.endswith("not_found") else 400)
        return
    yield {"type": "conversation", "id": started.conversation_id, "created": started.created}
    inputs = {"conversation_id": started.conversation_id, "user": user, "model": model,
              "message": started.message, "api_key": api_key, "params": dict(params or {})}
    final: dict[str, Any] = {}
    try:
        graph = await get_graph()
        async for mode, chunk in graph.astream(
                inputs, thread_config(started.conversation_id), context=Context.from_settings(),
                stream_mode=STREAM_MODES):
            for event in _events(mode, chunk, final):
                yield event
    except Exception:
        logger.exception("turn of conversation %s failed", started.conversation_id)
        yield _error("internal_error", _("The turn failed inside OpenClaw; the message is "
                                         "kept and can be sent again."), 500)
        return
    yield _last(started.conversation_id, final)


def _events(mode: str, chunk: Any, final: dict[str, Any]) -> list[dict]:
    """The events for one item of the graph's stream; ``final`` gathers the updates."""
    if mode == "custom":
        return [chunk] if isinstance(chunk, dict) else []
    if mode == "messages":
        message, metadata = chunk
        if (isinstance(message, AIMessageChunk) and metadata.get("langgraph_node") == "generate"
                and isinstance(message.content, str) and message.content):
            return [{"type": "token", "text": message.content}]
        return []
    events = []
    for node, update in chunk.items():
        if isinstance(update, dict):
            final.update(update)
        events.append({"type": "node", "node": node, "phase": "end"})
    return events


def _last(conversation_id: str, final: dict[str, Any]) -> dict:
    error, reply = final.get("error"), final.get("reply") or {}
    if error:
        return {"type": "error", **error}
    if "message_id" not in reply:
        return _error("internal_error", _("The turn ended without an answer."), 500)
    return {"type": "done", "conversation_id": conversation_id,
            "message_id": reply["message_id"], "content": reply["content"],
            "model": reply["model"], "models": reply.get("models", []),
            "finish_reason": reply.get("finish_reason"), "usage": reply.get("usage", {}),
            "route": {"rule": reply.get("rule"), "instance": reply.get("instance"),
                      "models_tried": reply.get("models_tried", [])},
            "overhead_ms": reply.get("overhead_ms")}


def _error(code: str, message: str, status: int = 400) -> dict:
    return {"type": "error", "code": code, "message": message, "status": status}


async def arun_turn(*, conversation_id: str | None, user: str, content: str | list[dict],
                    model: str, api_key: str = "", params: dict | None = None) -> dict:
    """``astream_turn`` without the stream: its last event (``done`` or ``error``), with
    the conversation's id added."""
    last: dict = {}
    conversation = None
    async for event in astream_turn(conversation_id=conversation_id, user=user,
                                    content=content, model=model, api_key=api_key,
                                    params=params):
        if event["type"] == "conversation":
            conversation = event["id"]
        last = event
    return {**last, "conversation_id": conversation} if conversation else last
