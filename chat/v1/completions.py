"""``POST /v1/chat/completions``: OpenAI's chat completions, streamed (SSE) or not,
through the plugin chain and the gateway; a temperature-0 answer may come from the
response cache. A request for a workflow or a server-side conversation goes on to
``chat.v1.workflows``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from django.http import HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from inference.engines.base import Delta
from inference.errors import EngineError
from plugins.base import PluginBlocked
from routing import response_cache
from routing.gateway import GatewayError, GatewayMeta
from routing.keys import KeyRefused
from routing.rules import estimate_tokens

from . import workflows
from .auth import admit, authenticate, refused, rotation_notice
from .calls import Call
from .streams import ChatStream
from .wire import (
    ApiRequest,
    ChunkWriter,
    InvalidBody,
    choice_body,
    completion_body,
    engine_error_response,
    error_response,
    parse_chat_body,
    sse_response,
    usage_dict,
)

ResponseT = TypeVar("ResponseT", bound=HttpResponseBase)


def with_meta(response: ResponseT, meta: GatewayMeta | None) -> ResponseT:
    meta = meta or GatewayMeta()
    response["x-openclaw-overhead-ms"] = f"{meta.overhead_ms():.1f}"
    response["x-openclaw-model"] = meta.model
    response["x-openclaw-route"] = meta.route
    return response


@csrf_exempt
@require_POST
@rotation_notice
async def chat_completions(request: ApiRequest) -> HttpResponseBase:
    """OpenAI's chat completions, streamed (SSE) or not, through the plugin chain and
    the gateway; a temperature-0 answer may come from the response cache."""
    started = time.perf_counter()
    try:
        try:
            model, streaming, include_usage, chat = parse_chat_body(request.body)
        except InvalidBody:
            await authenticate(request)  # a refused key is reported before a bad body
            raise
        ticket = await admit(request, model, estimate_tokens(chat.messages), chat.max_tokens)
    except KeyRefused as exc:
        return with_meta(refused(exc), None)
    except InvalidBody as exc:
        return with_meta(error_response(400, exc.message, "invalid_request", exc.param), None)
    if workflows.applies(request, model, chat.extra):  # the graph runs the plugins itself
        return await workflows.complete(request, ticket, model, streaming, include_usage,
                                        chat, started)
    try:
        call = await Call.begin(ticket, model, chat, "chat", started, request.headers)
    except PluginBlocked as exc:
        return with_meta(blocked(exc), None)
    if streaming:
        return await _stream_response(call, include_usage)
    meta = GatewayMeta()
    try:
        outcome = await call.complete(request.headers)
        meta = outcome.meta
        choices = call.after_plugins(outcome)
    except (GatewayError, EngineError, PluginBlocked) as exc:
        response = failure(exc)
        call.finish(meta, None, response.status_code)
        return with_meta(response, None)
    completion = outcome.completion
    body = completion_body(call.chat.request_id, int(time.time()), meta.model,
                           [choice_body(choice) for choice in choices],
                           usage_dict(completion.usage), **completion.fields)
    response = with_meta(JsonResponse(body), meta)
    if outcome.cache:
        response[response_cache.HEADER] = outcome.cache
    call.finish(meta, completion.usage, 200, cached=outcome.cached)
    return response


def failure(exc: GatewayError | EngineError | PluginBlocked) -> JsonResponse:
    """A refusal or failure before the answer, in OpenAI's shape."""
    if isinstance(exc, GatewayError):
        return error_response(exc.status, exc.message, exc.code)
    if isinstance(exc, EngineError):
        return engine_error_response(exc)
    return blocked(exc)


def blocked(exc: PluginBlocked) -> JsonResponse:
    """A plugin's refusal: 400 ``content_blocked``, its message for the user."""
    return error_response(400, exc.message, "content_blocked")


# A surface's streamed answer: its SSE events from the call's meta, the first delta, the
# rest and the time to the first one.
Relay = Callable[[GatewayMeta, Delta | None, AsyncIterator[Delta], float], AsyncIterator[bytes]]


async def stream_answer(call: Call, relay: Relay,
                        shape: Callable[[JsonResponse], JsonResponse] = lambda r: r
                        ) -> HttpResponseBase:
    """Wait for the first delta (so failover and errors before it get a real status:
    ``failure``, in the surface's ``shape``), then stream the relay's events as SSE.
    Every streaming surface answers through here."""
    meta = GatewayMeta()
    deltas = call.stream(meta)
    try:
        first = await anext(deltas, None)
    except (GatewayError, EngineError) as exc:
        response = failure(exc)
        call.finish(meta, None, response.status_code)
        return with_meta(shape(response), None)
    ttft_s = time.perf_counter() - call.started
    return with_meta(sse_response(relay(meta, first, deltas, ttft_s)), meta)


async def _stream_response(call: Call, include_usage: bool) -> HttpResponseBase:
    def relay(meta: GatewayMeta, first: Delta | None, deltas: AsyncIterator[Delta],
              ttft_s: float) -> AsyncIterator[bytes]:
        stream = ChatStream(ChunkWriter(call.chat.request_id, int(time.time()), meta.model),
                            meta, call.screen, include_usage,
                            estimate_tokens(call.chat.messages))
        return _sse(call, meta, stream, first, deltas, ttft_s)

    return await stream_answer(call, relay)


async def _sse(call: Call, meta: GatewayMeta, relay: ChatStream, first: Delta | None,
               deltas: AsyncIterator[Delta], ttft_s: float) -> AsyncIterator[bytes]:
    """The relay's events; however the stream ends, its tokens are counted and logged."""
    try:
        async for event in relay.events(first, deltas):
            yield event
    finally:
        call.finish(meta, relay.final_usage, relay.status, ttft_s=ttft_s)


