"""Messages between a caller and the worker generating for it, over the channel layer.

The caller opens a reply channel and dispatches ``inference.generate``; the
worker answers on it::

    gen.accepted   {worker, pid, control}   the task started; ``control`` takes gen.cancel
    gen.loaded     {}                       the engine is loaded (progress, after a cold load)
    gen.heartbeat  {}                       every HEARTBEAT_S while busy (liveness)
    gen.delta      {text, tokens, finish_reason, usage, at, …}   finish_reason on a choice's
                                            last one; ``at`` is the worker's clock when it was
                                            produced; ``index``, ``tool_calls``, ``refusal``,
                                            ``logprobs``, ``fields`` only when they are set
    gen.error      {code, message}          an EngineError, by code

The request itself rides the Celery broker, whose messages a Redis broker may keep on
disk (its append-only file) until they are consumed and the file rewritten: it travels
sealed (AES-256-GCM, the data keys of ``core.crypto``), so a prompt is never written
there in clear. The deltas cross the channel layer in clear, in flight only.
"""

from __future__ import annotations

import json
import time
from typing import Any

from core.crypto import decrypt, encrypt

from .engines.base import ChatRequest, Delta, Usage
from .errors import (
    AuthFailed,
    BadRequest,
    ConnectionFailed,
    ContextTooLong,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    RateLimited,
    ServerError,
)

HEARTBEAT_S = 1.0
ERRORS_BY_CODE: dict[str, type[EngineError]] = {
    cls.code: cls for cls in (AuthFailed, BadRequest, ConnectionFailed, ContextTooLong,
                              EngineError, EngineUnavailable, RateLimited, ServerError)
}


def request_to_dict(request: ChatRequest) -> dict[str, Any]:
    """The request as the task's argument: its id in clear (logs, cancel), the rest
    sealed."""
    fields = {"messages": request.messages, "max_tokens": request.max_tokens,
              "temperature": request.temperature, "top_p": request.top_p,
              "stop": request.stop, "seed": request.seed, "extra": request.extra}
    return {"request_id": request.request_id,
            "sealed": encrypt(json.dumps(fields, ensure_ascii=False))}


def request_from_dict(data: dict[str, Any]) -> ChatRequest:
    return ChatRequest(request_id=data.get("request_id", ""), **json.loads(decrypt(data["sealed"])))


# A delta's fields beyond text, tokens, finish and usage: sent only when set, so a plain
# text token stays as small on the channel layer as it was.
OPTIONAL = ("index", "tool_calls", "refusal", "logprobs", "fields", "message_fields")


def delta_message(delta: Delta) -> dict[str, Any]:
    usage = delta.usage
    message = {"type": "gen.delta", "at": time.time(), "text": delta.text,
               "tokens": delta.tokens, "finish_reason": delta.finish_reason,
               "usage": [usage.prompt_tokens, usage.completion_tokens] if usage else None}
    message.update((name, value) for name in OPTIONAL if (value := getattr(delta, name)))
    return message


def delta_from_message(message: dict[str, Any]) -> Delta:
    usage = message.get("usage")
    return Delta(text=message.get("text", ""), tokens=message.get("tokens", 0),
                 finish_reason=message.get("finish_reason"),
                 usage=Usage(*usage) if usage else None,
                 **{name: message[name] for name in OPTIONAL if name in message})


def error_message(exc: EngineError) -> dict[str, Any]:
    message = {"type": "gen.error", "code": exc.code, "message": exc.message}
    if isinstance(exc, EngineTimeout):
        message["phase"] = exc.phase
    return message


def error_from_message(message: dict[str, Any]) -> EngineError:
    code, text = message.get("code", "engine_error"), message.get("message", "")
    if code == EngineTimeout.code:
        return EngineTimeout(text, phase=message.get("phase", "total"))
    return ERRORS_BY_CODE.get(code, EngineError)(text)
