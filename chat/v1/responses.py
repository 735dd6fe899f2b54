"""``/v1/responses``: OpenAI's Responses API on the one chat core (``chat.v1.calls``) —
create, whole or streamed with its typed events, then retrieve, delete and
``input_items``. A stored response (``store``, the default) is kept encrypted with
its input (``chat.stored_responses``), so a later ``previous_response_id`` continues
the conversation: the stored turns' inputs and outputs come before the new input."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpResponseBase, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from inference.engines.base import ChatRequest, Delta
from inference.errors import EngineError
from plugins.base import PluginBlocked
from plugins.chain import StreamFilter
from routing.gateway import GatewayError, GatewayMeta
from routing.key_models import ApiKey
from routing.keys import KeyRefused
from routing.rules import estimate_tokens

from .. import stored_responses
from .auth import admit, authenticate, refused, rotation_notice
from .calls import Call, CallStream
from .completions import failure, stream_answer, with_meta
from .responses_wire import (
    items_to_messages,
    new_id,
    output_items,
    parse_responses_body,
    response_object,
    stored,
)
from .validation import InvalidBody
from .wire import ApiRequest, error_response


def _not_allowed(allowed: str) -> JsonResponse:
    response = error_response(405, _("Method not allowed."), "method_not_allowed")
    response["Allow"] = allowed
    return response


def _missing(response_id: str, param: str | None = None) -> JsonResponse:
    return error_response(404, _("No response “%(id)s” for this key.") % {"id": response_id},
                          "response_not_found", param)


@csrf_exempt
@rotation_notice
async def responses(request: ApiRequest) -> HttpResponseBase:
    """``POST /v1/responses``: a response, whole or streamed."""
    if request.method != "POST":
        return _not_allowed("POST")
    started = time.perf_counter()
    try:
        try:
            body, chat, items = parse_responses_body(request.body)
        except InvalidBody:
            await authenticate(request)  # a refused key is reported before a bad body
            raise
        ticket = await admit(request, body["model"], estimate_tokens(chat.messages),
                             chat.max_tokens)
        try:
            chat = await _with_history(ticket.api_key, body, chat, items)
        except InvalidBody:
            ticket.release_soon()  # refused after all: it counts for nothing
            raise
    except KeyRefused as exc:
        return with_meta(refused(exc), None)
    except InvalidBody as exc:
        code = "previous_response_not_found" if exc.param == "previous_response_id" \
            else "invalid_request"
        return with_meta(error_response(404 if code != "invalid_request" else 400,
                                        exc.message, code, exc.param), None)
    try:
        call = await Call.begin(ticket, body["model"], chat, "responses", started,
                                request.headers)
    except PluginBlocked as exc:
        return with_meta(error_response(400, exc.message, "content_blocked"), None)
    if body.get("stream"):
        return await _stream(call, body, items)
    return await _whole(call, body, items, request)


async def _with_history(key: ApiKey, body: dict[str, Any], chat: ChatRequest,
                        items: list[dict[str, Any]]) -> ChatRequest:
    """The request with the stored turns of ``previous_response_id`` before its input."""
    previous = body.get("previous_response_id")
    if not previous:
        return chat
    turns = await sync_to_async(stored_responses.chain)(key.family, previous)
    if turns is None:
        raise InvalidBody(_("No response “%(id)s” for this key.") % {"id": previous},
                          "previous_response_id")
    history = [message for turn in turns
               for message in items_to_messages([*turn.input_items, *turn.output])]
    system = chat.messages[:1] if body.get("instructions") is not None else []
    return replace(chat, messages=[*system, *history, *chat.messages[len(system):]])


async def _whole(call: Call, body: dict[str, Any], items: list[dict[str, Any]],
                 request: ApiRequest) -> HttpResponseBase:
    meta = GatewayMeta()
    try:
        outcome = await call.complete(request.headers)
        meta = outcome.meta
        choice = call.after_plugins(outcome)[0]
    except (GatewayError, EngineError, PluginBlocked) as exc:
        response = failure(exc)
        call.finish(meta, None, response.status_code)
        return with_meta(response, None)
    usage = outcome.completion.usage
    answer = response_object(call.chat.request_id, int(time.time()), body, meta.model,
                             "completed", output_items(choice), usage, choice.finish_reason)
    if stored(body):
        await sync_to_async(stored_responses.save)(call.key.family, answer, items)
    call.finish(meta, usage, 200, cached=outcome.cached)
    return with_meta(JsonResponse(answer), meta)


async def _stream(call: Call, body: dict[str, Any],
                  items: list[dict[str, Any]]) -> HttpResponseBase:
    return await stream_answer(
        call, lambda meta, first, deltas, ttft_s: ResponseStream(call, body, items, meta).events(
            first, deltas, ttft_s))


class ResponseStream(CallStream):
    """A streamed response as OpenAI streams it: ``response.created`` and
    ``in_progress``, each output item added, its text, refusal or arguments in deltas,
    each part and item done, then ``response.completed`` (or ``response.failed``)."""

    def __init__(self, call: Call, body: dict[str, Any], items: list[dict[str, Any]],
                 meta: GatewayMeta):
        super().__init__(call, meta)
        self.body, self.items = body, items
        self.created = int(time.time())
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.message: dict[str, Any] | None = None  # the open message item
        self.calls: dict[int, dict[str, Any]] = {}  # open function_call items by index
        self.screen: StreamFilter = call.screen()
        self.finish: str | None = None

    def event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return (f"event: {kind}\ndata: " + json.dumps(payload, ensure_ascii=False)
                + "\n\n").encode()

    def snapshot(self, status: str) -> dict[str, Any]:
        usage = self.final_usage if status != "in_progress" else None
        return response_object(self.call.chat.request_id, self.created, self.body,
                               self.meta.model, status, self.output, usage, self.finish)

    async def _events(self, first: Delta | None,
                      deltas: AsyncIterator[Delta]) -> AsyncIterator[bytes]:
        yield self.event("response.created", response=self.snapshot("in_progress"))
        yield self.event("response.in_progress", response=self.snapshot("in_progress"))
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
            self.status = 400 if isinstance(exc, PluginBlocked) else (
                exc.http_status if isinstance(exc, EngineError) else exc.status)
            code = "content_blocked" if isinstance(exc, PluginBlocked) else exc.code
            failed = self.snapshot("failed") | {"error": {"code": code,
                                                          "message": exc.message}}
            yield self.event("response.failed", response=failed)
            return
        for event in self._close():
            yield event
        answer = self.snapshot("completed")
        if stored(self.body):
            await sync_to_async(stored_responses.save)(self.call.key.family, answer,
                                                       self.items)
        yield self.event("response.completed", response=answer)

    def _relay(self, delta: Delta) -> list[bytes]:
        events: list[bytes] = []
        if delta.text:
            self.counted += delta.tokens or 1
            events += self._text(self.screen.feed(delta.text), delta.logprobs)
        if delta.refusal:
            events += self._refusal(delta.refusal)
        for fragment in delta.tool_calls or []:
            events += self._call_fragment(fragment)
        self.finish = delta.finish_reason or self.finish
        return events

    def _open_message(self, part: dict[str, Any]) -> list[bytes]:
        if self.message is not None:
            return []
        self.message = {"type": "message", "id": new_id("msg"), "status": "in_progress",
                        "role": "assistant", "content": []}
        self.output.append(self.message)
        index = len(self.output) - 1
        self.message["content"].append(part)
        return [self.event("response.output_item.added", output_index=index,
                           item={**self.message, "content": []}),
                self.event("response.content_part.added", item_id=self.message["id"],
                           output_index=index, content_index=0, part=dict(part))]

    def _text(self, text: str, logprobs: dict[str, Any] | None = None) -> list[bytes]:
        if not text:
            return []
        events = self._open_message({"type": "output_text", "text": "", "annotations": [],
                                     "logprobs": []})
        assert self.message is not None
        part = self.message["content"][0]
        entries = list((logprobs or {}).get("content") or [])
        part["text"] += text
        part.setdefault("logprobs", []).extend(entries)
        events.append(self.event("response.output_text.delta", item_id=self.message["id"],
                                 output_index=self.output.index(self.message),
                                 content_index=0, delta=text, logprobs=entries))
        return events

    def _refusal(self, text: str) -> list[bytes]:
        events = self._open_message({"type": "refusal", "refusal": ""})
        assert self.message is not None
        self.message["content"][0]["refusal"] = self.message["content"][0].get(
            "refusal", "") + text
        events.append(self.event("response.refusal.delta", item_id=self.message["id"],
                                 output_index=self.output.index(self.message),
                                 content_index=0, delta=text))
        return events

    def _call_fragment(self, fragment: dict[str, Any]) -> list[bytes]:
        index = fragment.get("index", 0)
        function = fragment.get("function") or {}
        events: list[bytes] = []
        if index not in self.calls:
            events += self._close_message()
            item = {"type": "function_call", "id": new_id("fc"),
                    "call_id": fragment.get("id") or new_id("call"),
                    "name": function.get("name") or "", "arguments": "",
                    "status": "in_progress"}
            self.calls[index] = item
            self.output.append(item)
            events.append(self.event("response.output_item.added",
                                     output_index=len(self.output) - 1, item=dict(item)))
        item = self.calls[index]
        if piece := function.get("arguments"):
            item["arguments"] += piece
            events.append(self.event("response.function_call_arguments.delta",
                                     item_id=item["id"],
                                     output_index=self.output.index(item), delta=piece))
        return events

    def _close_message(self) -> list[bytes]:
        if self.message is None or self.message["status"] == "completed":
            return []
        message, index = self.message, self.output.index(self.message)
        part = message["content"][0]
        message["status"] = "completed"
        events = [self.event("response.output_text.done", item_id=message["id"],
                             output_index=index, content_index=0, text=part["text"],
                             logprobs=part.get("logprobs", []))
                  if part["type"] == "output_text" else
                  self.event("response.refusal.done", item_id=message["id"],
                             output_index=index, content_index=0, refusal=part["refusal"])]
        events += [self.event("response.content_part.done", item_id=message["id"],
                              output_index=index, content_index=0, part=dict(part)),
                   self.event("response.output_item.done", output_index=index,
                              item=dict(message))]
        return events

    def _close(self) -> list[bytes]:
        if self.message is None and not self.calls:
            self._text(" ")  # an empty answer is still a message
            self.message["content"][0]["text"] = ""  # type: ignore[index]
        events = self._close_message()
        for item in self.calls.values():
            index = self.output.index(item)
            item["status"] = "completed"
            events += [self.event("response.function_call_arguments.done", item_id=item["id"],
                                  output_index=index, name=item["name"],
                                  arguments=item["arguments"]),
                       self.event("response.output_item.done", output_index=index,
                                  item=dict(item))]
        return events


# --- stored responses -----------------------------------------------------------------


@csrf_exempt
@rotation_notice
async def response(request: ApiRequest, response_id: str) -> HttpResponseBase:
    """``GET`` a stored response, or ``DELETE`` it."""
    if request.method not in ("GET", "DELETE"):
        return _not_allowed("GET, DELETE")
    try:
        key = await authenticate(request)
    except KeyRefused as exc:
        return refused(exc)
    if request.method == "DELETE":
        if not await sync_to_async(stored_responses.delete)(key.family, response_id):
            return _missing(response_id)
        return JsonResponse({"id": response_id, "object": "response.deleted", "deleted": True})
    found = await sync_to_async(stored_responses.load)(key.family, response_id)
    return JsonResponse(found[0]) if found else _missing(response_id)


@csrf_exempt
@rotation_notice
async def input_items(request: ApiRequest, response_id: str) -> HttpResponseBase:
    """``GET /v1/responses/{id}/input_items`` (``order``: desc by default, ``limit``)."""
    if request.method != "GET":
        return _not_allowed("GET")
    try:
        key = await authenticate(request)
    except KeyRefused as exc:
        return refused(exc)
    found = await sync_to_async(stored_responses.load)(key.family, response_id)
    if found is None:
        return _missing(response_id)
    query = getattr(request, "GET", {})
    items = list(found[1]) if query.get("order") == "asc" else list(reversed(found[1]))
    after = query.get("after")
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    try:
        limit = max(1, min(100, int(query.get("limit", 20))))
    except ValueError:
        return error_response(400, _("“limit” must be an integer."), "invalid_request", "limit")
    page = items[:limit]
    return JsonResponse({"object": "list", "data": page,
                         "first_id": page[0]["id"] if page else None,
                         "last_id": page[-1]["id"] if page else None,
                         "has_more": len(items) > limit})
