"""``POST /v1/chat/completions``: OpenAI's chat completions, streamed (SSE) or not,
through the plugin chain and the gateway; a temperature-0 answer may come from the
response cache. A request for a workflow or a server-side conversation goes on to
``chat.v1.workflows``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import TypeVar

from django.http import HttpResponse, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core import metrics
from inference.engines.base import ChatRequest, Delta, Usage
from inference.errors import EngineError
from plugins.base import PluginBlocked, PluginRequest, PluginResponse
from plugins.chain import StreamFilter, aget_chain
from routing import gateway, response_cache
from routing.gateway import GatewayError, GatewayMeta
from routing.key_models import ApiKey
from routing.keys import KeyRefused
from routing.rules import RequestFacts, estimate_tokens
from routing.usage import log_usage

from . import workflows
from .auth import admit, authenticate, record_usage, refused, rotation_notice
from .wire import (
    SSE_DONE,
    ApiRequest,
    ChunkWriter,
    InvalidBody,
    completion_body,
    engine_error_response,
    error_response,
    parse_chat_body,
    sse_response,
    usage_dict,
)

CHAT_ROUTE = "/v1/chat/completions"

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
        key = await admit(request, model, estimate_tokens(chat.messages))
    except KeyRefused as exc:
        return with_meta(refused(exc), None)
    except InvalidBody as exc:
        return with_meta(error_response(400, exc.message, "invalid_request", exc.param), None)
    if workflows.applies(request, model, chat.extra):  # the graph runs the plugins itself
        return await workflows.complete(request, key, model, streaming, include_usage, chat,
                                        started)
    chain = await aget_chain()
    try:
        plugged = chain.pre_process(PluginRequest(
            messages=chat.messages, model=model, user=str(key.owner_id or ""),
            api_key=key.prefix))
    except PluginBlocked as exc:
        return with_meta(_blocked(exc), None)
    chat = replace(chat, messages=plugged.messages)
    facts = RequestFacts(model=plugged.model, messages=plugged.messages, api_key=key.prefix,
                         user=plugged.user, flags=frozenset(plugged.flags))
    deadline_s = gateway.deadline_from_headers(request.headers)
    if streaming:
        return await _stream_response(key, facts, chat, chain.stream_filter(plugged),
                                      include_usage, deadline_s, started)
    cache_key = None
    if response_cache.enabled_for(key) and not response_cache.bypassed(request.headers):
        cache_key = response_cache.cache_key(facts.model, chat.messages,
                                             response_cache.chat_params(chat))
    if cache_key is not None and (cached := await response_cache.aget(cache_key)):
        return _cached(key, chat, cached, started)
    meta = GatewayMeta()
    try:
        completion, meta = await gateway.complete(facts, chat, deadline_s)
        answer = chain.post_process(PluginResponse(
            content=completion.text, model=meta.model, request=plugged))
    except (GatewayError, EngineError, PluginBlocked) as exc:
        response = _failure(exc)
        _log_usage(key, chat, meta, None, response.status_code, started)
        return with_meta(response, None)
    record_usage(key, completion.usage.total_tokens)
    body = completion_body(chat.request_id, int(time.time()), meta.model, answer.content,
                           completion.finish_reason or "stop", usage_dict(completion.usage))
    response = with_meta(JsonResponse(body), meta)
    if cache_key is not None:
        await response_cache.aput(cache_key, {**body, "x_openclaw_route": meta.route})
        response[response_cache.HEADER] = response_cache.MISS
    metrics.observe_overhead(CHAT_ROUTE, meta.overhead_ms() / 1000)
    _log_usage(key, chat, meta, completion.usage, 200, started)
    return response



def _failure(exc: GatewayError | EngineError | PluginBlocked) -> JsonResponse:
    if isinstance(exc, GatewayError):
        return error_response(exc.status, exc.message, exc.code)
    if isinstance(exc, EngineError):
        return engine_error_response(exc)
    return _blocked(exc)


def _cached(key: ApiKey, chat: ChatRequest, cached: dict, started: float) -> HttpResponse:
    """A cached answer under this request's id: no model ran, no tokens are counted."""
    route = cached.pop("x_openclaw_route", "")
    cached.update(id=chat.request_id, created=int(time.time()))
    meta = GatewayMeta(model=cached.get("model", ""), route_override=f"cache; {route}")
    response = with_meta(JsonResponse(cached), meta)
    response[response_cache.HEADER] = response_cache.HIT
    _log_usage(key, chat, meta, None, 200, started, endpoint="chat-cache")
    return response


def _log_usage(key: ApiKey, chat: ChatRequest, meta: GatewayMeta, usage: Usage | None,
               status: int, started: float, ttft_s: float | None = None,
               endpoint: str = "chat") -> None:
    """One usage record, written by a Celery task later (costs microseconds here)."""
    log_usage(key_prefix=key.prefix, user=str(key.owner_id or ""), model=meta.model,
              instance=meta.instance_id, tokens_in=usage.prompt_tokens if usage else 0,
              tokens_out=usage.completion_tokens if usage else 0,
              latency_ms=(time.perf_counter() - started) * 1000,
              ttft_ms=ttft_s * 1000 if ttft_s is not None else None, status=status,
              endpoint=endpoint, request_id=chat.request_id)


def _blocked(exc: PluginBlocked) -> JsonResponse:
    """A plugin's refusal: 400 ``content_blocked``, its message for the user."""
    return error_response(400, exc.message, "content_blocked")


async def _stream_response(key: ApiKey, facts: RequestFacts, chat: ChatRequest,
                           screen: StreamFilter, include_usage: bool,
                           deadline_s: float | None, started: float) -> HttpResponseBase:
    """Wait for the first delta (so failover and errors before it get a real status),
    then stream the rest as SSE."""
    meta = GatewayMeta()
    deltas = gateway.stream(facts, chat, meta, deadline_s)
    try:
        first = await anext(deltas, None)
    except (GatewayError, EngineError) as exc:
        response = _failure(exc)
        _log_usage(key, chat, meta, None, response.status_code, started)
        return with_meta(response, None)
    ttft_s = time.perf_counter() - started
    events = _sse(key, chat, meta, first, deltas, screen, include_usage,
                  lambda usage, status: _log_usage(key, chat, meta, usage, status, started,
                                                   ttft_s))
    return with_meta(sse_response(events), meta)


async def _sse(key: ApiKey, chat: ChatRequest, meta: GatewayMeta, first: Delta | None,
               deltas: AsyncIterator[Delta], screen: StreamFilter, include_usage: bool,
               finished: Callable[[Usage, int], None]) -> AsyncIterator[bytes]:
    """The SSE events of a stream: each delta as the plugins' stream hooks let it through
    (a word to mask may be held back until it is whole), the failure of a stream that
    could not be continued as an error event, then the finish with OpenClaw's
    metadata (which models answered, what the plugins did) and the usage."""
    writer = ChunkWriter(chat.request_id, int(time.time()), meta.model)
    chunk = writer.chunk
    yield chunk({"role": "assistant", "content": ""})
    finish, usage, counted, status = None, None, 0, 200
    try:
        delta = first
        while delta is not None:
            if delta.text:
                counted += delta.tokens or 1
                text = screen.feed(delta.text)
                if text:
                    yield chunk({"content": text})
            finish, usage = delta.finish_reason or finish, delta.usage or usage
            delta = await anext(deltas, None)
        rest = screen.flush()
        if rest:
            yield chunk({"content": rest})
    except (EngineError, GatewayError) as exc:
        status = exc.http_status if isinstance(exc, EngineError) else exc.status
        yield writer.error(status, exc.message, exc.code)
        return
    except PluginBlocked as exc:
        status = 400
        yield writer.error(400, exc.message, "content_blocked")
        return
    except BaseException:
        status = 499  # the client went away (nginx's code for it): the stream was cancelled
        raise
    finally:
        usage = usage or Usage(estimate_tokens(chat.messages), counted)
        record_usage(key, usage.total_tokens)
        metrics.observe_overhead(CHAT_ROUTE, meta.overhead_ms() / 1000)
        finished(usage, status)
    yield chunk({}, finish or "stop", x_openclaw={
        "model": meta.model, "route": meta.route, "models_tried": meta.models_tried,
        "models": meta.models or [meta.model], "overhead_ms": round(meta.overhead_ms(), 1),
        "plugin_actions": [*screen.request.metadata.get("plugin_actions", []),
                           *screen.metadata.get("plugin_actions", [])]})
    if include_usage:
        yield writer.usage(usage_dict(usage))
    yield SSE_DONE
