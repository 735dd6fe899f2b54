"""``/v1/messages``: Anthropic's Messages API on the one chat core (``chat.v1.calls``) —
whole or streamed with Anthropic's events (``message_start``, a ``content_block_*``
run per text or ``tool_use`` block, ``message_delta`` with the stop reason and usage,
``message_stop``) — and ``/v1/messages/count_tokens``. The key comes in ``x-api-key``
(or a bearer token); ``anthropic-version`` is required, as Anthropic requires it;
every error, a refused key's included, is in Anthropic's shape."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpResponseBase, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from inference.engines.base import Delta, Usage
from inference.errors import EngineError
from plugins.base import PluginBlocked
from plugins.chain import StreamFilter
from routing.gateway import GatewayError, GatewayMeta
from routing.keys import KeyRefused
from routing.rules import estimate_tokens

from .auth import admit, authenticate, refused, rotation_notice
from .calls import Call, CallStream
from .completions import failure, stream_answer, with_meta
from .messages_wire import (
    VERSION_HEADER,
    as_anthropic_error,
    chat_messages,
    content_blocks,
    error_body,
    error_response,
    message_object,
    parse_messages_body,
    stop_reason,
    usage_body,
)
from .validation import InvalidBody
from .wire import ApiRequest, body_and_model


def _refusal_of(request: ApiRequest) -> JsonResponse | None:
    """What Anthropic answers before reading the body: the wrong method, no version."""
    if request.method != "POST":
        response = error_response(405, _("Method not allowed."))
        response["Allow"] = "POST"
        return response
    if not request.headers.get(VERSION_HEADER):
        return error_response(400, _("anthropic-version: header is required"))
    return None


@csrf_exempt
@rotation_notice
async def messages(request: ApiRequest) -> HttpResponseBase:
    """``POST /v1/messages``: a message, whole or streamed."""
    if (early := _refusal_of(request)) is not None:
        return with_meta(early, None)
    started = time.perf_counter()
    try:
        try:
            body, chat = parse_messages_body(request.body)
        except InvalidBody:
            await authenticate(request)  # a refused key is reported before a bad body
            raise
        ticket = await admit(request, body["model"], estimate_tokens(chat.messages),
                             chat.max_tokens)
        call = await Call.begin(ticket, body["model"], chat, "messages", started,
                                request.headers)
    except KeyRefused as exc:
        return with_meta(as_anthropic_error(refused(exc)), None)
    except InvalidBody as exc:
        message = f"{exc.param}: {exc.message}" if exc.param else exc.message
        return with_meta(error_response(400, message), None)
    except PluginBlocked as exc:
        return with_meta(error_response(400, exc.message), None)
    if body.get("stream"):
        return await _stream(call)
    meta = GatewayMeta()
    try:
        outcome = await call.complete(request.headers)
        meta = outcome.meta
        choice = call.after_plugins(outcome)[0]
    except (GatewayError, EngineError, PluginBlocked) as exc:
        response = failure(exc)
        call.finish(meta, None, response.status_code)
        return with_meta(as_anthropic_error(response), None)
    usage = outcome.completion.usage
    answer = message_object(call.chat.request_id, meta.model, content_blocks(choice),
                            stop_reason(choice.finish_reason,
                                        bool(choice.refusal and not choice.text)), usage)
    call.finish(meta, usage, 200, cached=outcome.cached)
    return with_meta(JsonResponse(answer), meta)


async def _stream(call: Call) -> HttpResponseBase:
    return await stream_answer(
        call, lambda meta, first, deltas, ttft_s: MessageStream(call, meta).events(
            first, deltas, ttft_s), as_anthropic_error)


class MessageStream(CallStream):
    """A streamed message as Anthropic streams it. Text and each tool call are blocks
    in the order they come; a call's arguments are ``input_json_delta`` pieces."""

    def __init__(self, call: Call, meta: GatewayMeta):
        super().__init__(call, meta)
        self.screen: StreamFilter = call.screen()
        self.block: int | None = None  # the open block's index
        self.kind: str | None = None  # "text" or the open tool call's index as a string
        self.blocks = 0
        self.finish: str | None = None
        self.refused = False

    @staticmethod
    def event(kind: str, **fields: Any) -> bytes:
        payload = json.dumps({"type": kind, **fields}, ensure_ascii=False)
        return f"event: {kind}\ndata: {payload}\n\n".encode()

    async def _events(self, first: Delta | None,
                      deltas: AsyncIterator[Delta]) -> AsyncIterator[bytes]:
        start = message_object(self.call.chat.request_id, self.meta.model, [], None,
                               Usage(estimate_tokens(self.call.chat.messages), 1))
        yield self.event("message_start", message=start)
        yield self.event("ping")
        try:
            delta = first
            while delta is not None:
                if delta.index == 0:
                    for event in self._relay(delta):
                        yield event
                self.usage = delta.usage or self.usage
                delta = await anext(deltas, None)
            for event in self._text(self.screen.flush()):
                yield event
        except (EngineError, GatewayError, PluginBlocked) as exc:
            response = failure(exc)
            self.status = response.status_code
            error = error_body(self.status, json.loads(response.content)["error"]["message"])
            yield self.event("error", error=error["error"])
            return
        for event in self._close():
            yield event
        yield self.event("message_delta",
                         delta={"stop_reason": stop_reason(self.finish, self.refused),
                                "stop_sequence": None},
                         usage=usage_body(self.final_usage))
        yield self.event("message_stop")

    def _relay(self, delta: Delta) -> list[bytes]:
        events: list[bytes] = []
        if delta.text:
            self.counted += delta.tokens or 1
            events += self._text(self.screen.feed(delta.text))
        if delta.refusal:
            self.refused = True
            events += self._text(delta.refusal)
        for fragment in delta.tool_calls or []:
            events += self._call_fragment(fragment)
        self.finish = delta.finish_reason or self.finish
        return events

    def _open(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        events = self._close()
        self.block, self.kind = self.blocks, kind
        self.blocks += 1
        return [*events, self.event("content_block_start", index=self.block,
                                    content_block=block)]

    def _text(self, text: str) -> list[bytes]:
        if not text:
            return []
        events = [] if self.kind == "text" else self._open("text", {"type": "text", "text": ""})
        return [*events, self.event("content_block_delta", index=self.block,
                                    delta={"type": "text_delta", "text": text})]

    def _call_fragment(self, fragment: dict[str, Any]) -> list[bytes]:
        function = fragment.get("function") or {}
        kind = str(fragment.get("index", 0))
        events: list[bytes] = []
        if self.kind != kind:
            events = self._open(kind, {"type": "tool_use", "id": fragment.get("id") or "",
                                       "name": function.get("name") or "", "input": {}})
        if piece := function.get("arguments"):
            events.append(self.event("content_block_delta", index=self.block,
                                     delta={"type": "input_json_delta",
                                            "partial_json": piece}))
        return events

    def _close(self) -> list[bytes]:
        if self.block is None:
            return []
        index, self.block, self.kind = self.block, None, None
        return [self.event("content_block_stop", index=index)]


@csrf_exempt
@rotation_notice
async def count_tokens(request: ApiRequest) -> HttpResponseBase:
    """``POST /v1/messages/count_tokens``: the prompt's tokens as OpenClaw's router
    estimates them (about four characters a token), tools' schemas included."""
    if (early := _refusal_of(request)) is not None:
        return early
    try:
        await authenticate(request)
        body, _model = body_and_model(request.body)
        counted = chat_messages(body.get("messages"))
        extra = json.dumps([body[name] for name in ("system", "tools") if body.get(name)],
                           ensure_ascii=False)
    except KeyRefused as exc:
        return as_anthropic_error(refused(exc))
    except InvalidBody as exc:
        return error_response(400, f"{exc.param}: {exc.message}" if exc.param else exc.message)
    tokens = estimate_tokens([*counted, {"role": "system", "content": extra}])
    return JsonResponse({"input_tokens": tokens})

