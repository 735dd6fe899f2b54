"""OpenAI's wire format, the one place it is written: request bodies parsed into the
internal request (``ChatRequest``) or refused with the parameter at fault
(``InvalidBody``), errors in OpenAI's shape ``{"error": {message, type, param, code}}``,
and answers — whole completions, SSE chunks, embeddings — shaped as the SDKs read them.

``ApiRequest`` is what the ``/v1`` views read of a request: Django's ``HttpRequest``
has it, and so does the lighter request the ASGI fast path builds
(``chat.v1.asgi.FastRequest``).
"""

from __future__ import annotations

import base64
import json
import math
import struct
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from django.http import JsonResponse, StreamingHttpResponse
from django.utils.translation import gettext as _

from inference.engines.base import ChatRequest, Choice, Completion, Usage
from inference.errors import EngineError, RateLimited
from routing.key_models import ApiKey

from . import validation
from .validation import InvalidBody

__all__ = ["InvalidBody", "parse_chat_body", "parse_embeddings_body"]

NAMED_FIELDS = {"model", "messages", "stream", "stream_options", "max_tokens", "temperature",
                "top_p", "stop", "seed"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error"}
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit on the items of one request
SSE_DONE = b"data: [DONE]\n\n"


class ApiRequest(Protocol):
    """The part of a request the ``/v1`` views read."""

    method: str
    path: str
    body: bytes
    META: dict[str, Any]
    openclaw_key: ApiKey | None

    @property
    def headers(self) -> Mapping[str, str]: ...


# --- errors ---------------------------------------------------------------------------


def error_body(status: int, message: str, code: str | None, param: str | None = None) -> dict:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(status: int, message: str, code: str | None, param: str | None = None,
                   retry_after: float | None = None) -> JsonResponse:
    response = JsonResponse(error_body(status, message, code, param), status=status)
    if retry_after is not None:
        response["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def engine_error_response(exc: EngineError) -> JsonResponse:
    """RateLimited 429, timeouts 504, context 400, bad requests 400, the rest 502/503."""
    retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
    return error_response(exc.http_status, exc.message, exc.code, exc.param,
                          retry_after=retry_after)


# --- request bodies -------------------------------------------------------------------


def body_and_model(raw: bytes) -> tuple[dict[str, Any], str]:
    """The JSON object of a request body and its ``model``, or ``InvalidBody``."""
    try:
        body = json.loads(raw or b"")
    except (ValueError, UnicodeDecodeError):
        raise InvalidBody(_("The request body is not valid JSON.")) from None
    except RecursionError:
        raise InvalidBody(_("The request body nests too deeply.")) from None
    if not isinstance(body, dict):
        raise InvalidBody(_("The request body must be a JSON object."))
    if b"\\ud" in raw or b"\\uD" in raw:
        validation.text(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidBody(_("“model” must be a non-empty string."), "model")
    return body, model


def parse_chat_body(raw: bytes) -> tuple[str, bool, bool, ChatRequest]:
    """(model, stream, include_usage, request) from a request body, or ``InvalidBody``."""
    body, model = body_and_model(raw)
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise InvalidBody(_("“stream” must be true or false."), "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidBody(_("“stream_options” must be an object."), "stream_options")
    validation.tools(body)
    validation.choices_and_logprobs(body)
    validation.response_format(body)
    validation.integer(body, "max_completion_tokens", 1, validation.MAX_TOKENS)
    request = ChatRequest(
        messages=validation.messages(body), **validation.sampling(body),
        extra={k: v for k, v in body.items() if k not in NAMED_FIELDS},
        request_id=f"chatcmpl-{uuid.uuid4().hex}")
    return model, stream, bool(options.get("include_usage")), request


def _embedding_texts(raw: Any) -> list[str]:
    """The texts of ``input``: a string or a list of strings. Token-id arrays are
    OpenAI-valid but refused: no backend here shares OpenAI's tokenizer."""
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise InvalidBody(_("“input” must be a non-empty string or list of strings."), "input")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise InvalidBody(_("“input” may hold at most %(n)d items.")
                          % {"n": MAX_EMBEDDING_INPUTS}, "input")
    if all(isinstance(t, int) and not isinstance(t, bool) for t in texts) or all(
            isinstance(t, list) and all(isinstance(i, int) for i in t) for t in texts):
        raise InvalidBody(_("Token-id input is not supported here: send the text."), "input")
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise InvalidBody(_("Each input must be a non-empty string."), f"input[{index}]")
    return texts


def parse_embeddings_body(raw: bytes) -> tuple[str, list[str], str, int | None]:
    """(model, texts, encoding format, dimensions) from a request body, or ``InvalidBody``."""
    body, model = body_and_model(raw)
    if "input" not in body:
        raise InvalidBody(_("“input” is required."), "input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise InvalidBody(_("“encoding_format” must be “float” or “base64”."),
                          "encoding_format")
    return (model, _embedding_texts(body["input"]), encoding,
            validation.integer(body, "dimensions", 1))


# --- answers --------------------------------------------------------------------------


def usage_dict(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def choice_body(choice: Choice, content: str | None = None) -> dict[str, Any]:
    """One choice of a ``chat.completion``: the assistant's message (``content`` as the
    plugins left it, else the choice's own; null when it only calls tools), its tool
    calls and refusal, the logprobs and why it ended."""
    message: dict[str, Any] = {"role": "assistant",
                               "content": choice.text if content is None else content,
                               "refusal": choice.refusal}
    if choice.tool_calls:
        message["tool_calls"] = choice.tool_calls
    message.update(choice.message_fields or {})
    return {"index": choice.index, "message": message, "logprobs": choice.logprobs,
            "finish_reason": choice.finish_reason or "stop"}


def completion_body(request_id: str, created: int, model: str, choices: list[dict[str, Any]],
                    usage: dict[str, int], **extra: Any) -> dict[str, Any]:
    """A whole ``chat.completion``; ``extra``: answer-level fields (``system_fingerprint``,
    ``service_tier``, OpenClaw's ``x_openclaw``)."""
    return {"id": request_id, "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "usage": usage, **extra}


def completion_of(request_id: str, created: int, model: str, completion: Completion,
                  **extra: Any) -> dict[str, Any]:
    """``completion_body`` of an engine's answer as it came."""
    return completion_body(request_id, created, model,
                           [choice_body(choice) for choice in completion.choices],
                           usage_dict(completion.usage), **{**completion.fields, **extra})


def embedding_item(index: int, vector: list[float], dimensions: int | None,
                   encoding: str) -> dict[str, Any]:
    """One ``embedding`` object: the vector cut to ``dimensions`` and scaled back to unit
    length, as OpenAI does, then as floats or base64 little-endian float32."""
    if dimensions is not None and dimensions < len(vector):
        cut = vector[:dimensions]
        norm = math.sqrt(sum(v * v for v in cut)) or 1.0
        vector = [v / norm for v in cut]
    encoded: list[float] | str = vector
    if encoding == "base64":
        encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return {"object": "embedding", "index": index, "embedding": encoded}


# --- server-sent events ----------------------------------------------------------------


def sse_event(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


class ChunkWriter:
    """The ``chat.completion.chunk`` events of one streamed answer; ``base`` takes the
    answer-level fields (``system_fingerprint``) once the backend has sent them."""

    def __init__(self, request_id: str, created: int, model: str):
        self.base: dict[str, Any] = {"id": request_id, "object": "chat.completion.chunk",
                                     "created": created, "model": model}

    def chunk(self, delta: dict, finish: str | None = None, *, index: int = 0,
              logprobs: dict[str, Any] | None = None, **extra: Any) -> bytes:
        return sse_event({**self.base, "choices": [{"index": index, "delta": delta,
                                                    "logprobs": logprobs,
                                                    "finish_reason": finish}], **extra})

    def usage(self, usage: dict[str, int]) -> bytes:
        """The last chunk when ``stream_options.include_usage`` asks for it."""
        return sse_event({**self.base, "choices": [], "usage": usage})

    @staticmethod
    def error(status: int, message: str, code: str | None) -> bytes:
        """A failure after the stream started: an error event, then ``[DONE]``."""
        return sse_event(error_body(status, message, code)) + SSE_DONE


def sse_response(events: AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
