"""A turn's events (see ``chat.graph.service``): made from the items of the graph's
stream, merged when their reader fell behind, and the turn's last."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _


def events_of(mode: str, chunk: Any, final: dict[str, Any],
              interrupts: list[dict] | None = None) -> list[dict]:
    """The events for one item of the graph's stream; ``final`` gathers the updates
    (of the top graph: a subgraph's are passed an empty dict), ``interrupts`` the
    human-approval stops."""
    if mode == "custom":
        return [chunk] if isinstance(chunk, dict) else []
    events = []
    for node, update in chunk.items():
        if node == "__interrupt__":
            for stop in update:
                found = {"id": stop.id, "value": stop.value}
                if interrupts is not None and found not in interrupts:
                    interrupts.append(found)
                    events.append({"type": "interrupt", **found})
            continue
        if isinstance(update, dict):
            final.update(update)
        events.append({"type": "node", "node": node, "phase": "end"})
    return events


MERGED_CHARS = 4096  # the most text one merged token event carries


def merged(events: list[dict]) -> list[dict]:
    """``events`` with each run of consecutive ``token`` events as one (their texts
    joined, up to ``MERGED_CHARS``): the tokens that arrived while the reader was busy
    travel on together, so a loaded process relays fewer, larger pieces, and an idle
    one still each token as it comes (nothing waits to be merged)."""
    out: list[dict] = []
    pieces: list[str] = []
    size = 0
    for event in events:
        if event.get("type") == "token" and len(event) == 2:
            text = event.get("text") or ""
            if pieces and size + len(text) > MERGED_CHARS:
                out.append({"type": "token", "text": "".join(pieces)})
                pieces, size = [], 0
            pieces.append(text)
            size += len(text)
            continue
        if pieces:
            out.append({"type": "token", "text": "".join(pieces)})
            pieces, size = [], 0
        out.append(event)
    if pieces:
        out.append({"type": "token", "text": "".join(pieces)})
    return out


def last_event(conversation_id: str, final: dict[str, Any]) -> dict:
    """The turn's last event, from the graph's final state: ``done`` or ``error``."""
    error, reply = final.get("error"), final.get("reply") or {}
    if error:
        return {"type": "error", **error}
    if "content" not in reply:
        return error_event("internal_error", _("The turn ended without an answer."), 500)
    # A workflow without a memory_write node answers without storing the reply.
    return {"type": "done", "conversation_id": conversation_id,
            "message_id": reply.get("message_id"), "content": reply["content"],
            "model": reply["model"], "models": reply.get("models", []),
            "finish_reason": reply.get("finish_reason"), "usage": reply.get("usage", {}),
            "route": {"rule": reply.get("rule"), "instance": reply.get("instance"),
                      "models_tried": reply.get("models_tried", [])},
            "overhead_ms": reply.get("overhead_ms")}


def error_event(code: str, message: str, status: int = 400) -> dict:
    """An ``error`` event (``status``: HTTP-like)."""
    return {"type": "error", "code": code, "message": message, "status": status}
