"""The OpenAI-compatible HTTP API (``/v1/models``, ``/v1/chat/completions``,
``/v1/embeddings``): thin async views that check the API key, validate the body and
call ``routing.gateway`` (embeddings: the model's instances directly).
Every error is answered in OpenAI's shape ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

import base64
import functools
import json
import logging
import math
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Min
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from inference.engines.base import ChatRequest, Delta, EmbeddingResult, Usage
from inference.errors import EngineError, RateLimited
from inference.registry import build_engine
from openclaw_site import metrics
from plugins.base import PluginBlocked, PluginRequest, PluginResponse
from plugins.chain import StreamFilter, aget_chain
from routing import gateway, response_cache
from routing.gateway import GatewayError, GatewayMeta
from routing.key_models import ApiKey
from routing.key_services import (
    KeyRefused,
    admit,
    authenticate,
    claim_successor,
    client_ip,
    record_usage_soon,
)
from routing.models import ModelEndpoint
from routing.rules import RequestFacts, estimate_tokens
from routing.services import endpoint_config
from routing.usage import log_usage

logger = logging.getLogger(__name__)

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
NAMED_FIELDS = {"model", "messages", "stream", "stream_options", "max_tokens", "temperature",
                "top_p", "stop", "seed"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "invalid_request_error", 429: "rate_limit_error"}


class InvalidBody(Exception):
    """A request body OpenAI would refuse: the message and the parameter at fault."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message, self.param = message, param


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
    return error_response(exc.http_status, exc.message, exc.code, retry_after=retry_after)


ROTATION_HEADER = "x-openclaw-key-rotated"


def rotation_notice(view):
    """Tell the holder of a rotated key, on every answer during its grace period,
    that a successor waits for it (``POST /v1/key/successor``)."""

    @functools.wraps(view)
    async def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        response = await view(request, *args, **kwargs)
        key = getattr(request, "openclaw_key", None)
        if key is not None and key.grace_until is not None:
            response[ROTATION_HEADER] = f"grace-until={key.grace_until.isoformat()}"
        return response

    return wrapped


def _with_meta(response: HttpResponse, meta: GatewayMeta | None) -> HttpResponse:
    meta = meta or GatewayMeta()
    response["x-openclaw-overhead-ms"] = f"{meta.overhead_ms():.1f}"
    response["x-openclaw-model"] = meta.model
    response["x-openclaw-route"] = meta.route
    return response


# --- authentication -------------------------------------------------------------------


def _bearer(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _sep, secret = header.partition(" ")
    return secret.strip() or None if scheme.lower() == "bearer" else None


def _client_address(request: HttpRequest) -> str:
    return client_ip(request.META.get("REMOTE_ADDR", ""), request.headers.get("X-Forwarded-For"),
                     settings.OPENCLAW_TRUSTED_PROXIES)


async def _authenticate(request: HttpRequest) -> ApiKey:
    """The request's key, valid from this address (no limits counted), or ``KeyRefused``."""
    key = await sync_to_async(authenticate)(_bearer(request), _client_address(request))
    request.openclaw_key = key
    return key


async def _admit(request: HttpRequest, model: str, tokens: int) -> ApiKey:
    """Authenticate, check the model scope and count the request against the key's
    limits, from the event loop (``routing.key_services.admit``), or ``KeyRefused``."""
    key = await admit(_bearer(request), _client_address(request), model, tokens)
    request.openclaw_key = key
    return key


def _record_usage(key: ApiKey, tokens: int) -> None:
    """Add the tokens to the key's counters in the background: the answer does not wait
    for it; the next request sees it."""
    if tokens > 0 and (key.tpm_limit or key.token_budget):
        record_usage_soon(key, tokens)


def _refused(exc: KeyRefused) -> JsonResponse:
    return error_response(exc.status, exc.message, exc.code, retry_after=exc.retry_after)


# --- /v1/models -----------------------------------------------------------------------


def _model_list(key: ApiKey) -> list[dict[str, Any]]:
    rows = (ModelEndpoint.objects.filter(enabled=True).values("name")
            .annotate(created=Min("created_at")).order_by("name"))
    allowed = set(key.allowed_models or ())
    return [{"id": row["name"], "object": "model", "created": int(row["created"].timestamp()),
             "owned_by": "openclaw"}
            for row in rows if not allowed or row["name"] in allowed]


@csrf_exempt
@require_GET
@rotation_notice
async def models(request: HttpRequest) -> HttpResponse:
    """The enabled model names this key may use, in OpenAI's list shape."""
    try:
        key = await _authenticate(request)
    except KeyRefused as exc:
        return _refused(exc)
    data = await sync_to_async(_model_list)(key)
    return JsonResponse({"object": "list", "data": data})


# --- body validation ------------------------------------------------------------------


def _number(body: dict, name: str, low: float, high: float | None) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if (not isinstance(value, int | float) or isinstance(value, bool) or value < low
            or (high is not None and value > high)):
        limit = f"{low}–{high}" if high is not None else f"≥ {low}"
        raise InvalidBody(_("“%(name)s” must be a number %(limit)s.")
                          % {"name": name, "limit": limit}, name)
    return value


def _integer(body: dict, name: str, low: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or (low is not None and value < low):
        raise InvalidBody(_("“%(name)s” must be an integer.") % {"name": name}
                          if low is None else _("“%(name)s” must be an integer ≥ %(low)d.")
                          % {"name": name, "low": low}, name)
    return value


def _messages(body: dict) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidBody(_("“messages” must be a non-empty list of {role, content} objects."),
                          "messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidBody(_("Each message must be an object."), where)
        if message.get("role") not in ROLES:
            raise InvalidBody(_("“role” must be one of %(roles)s.")
                              % {"roles": ", ".join(sorted(ROLES))}, f"{where}.role")
        content = message.get("content")
        if not (isinstance(content, str | list)
                or (content is None and message["role"] == "assistant")):
            raise InvalidBody(_("“content” must be a string or a list of content parts."),
                              f"{where}.content")
    return messages


def _stop(body: dict) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return stop
    raise InvalidBody(_("“stop” must be a string or a list of strings."), "stop")


def _body_and_model(raw: bytes) -> tuple[dict[str, Any], str]:
    """The JSON object of a request body and its ``model``, or ``InvalidBody``."""
    try:
        body = json.loads(raw or b"")
    except (ValueError, UnicodeDecodeError):
        raise InvalidBody(_("The request body is not valid JSON.")) from None
    if not isinstance(body, dict):
        raise InvalidBody(_("The request body must be a JSON object."))
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidBody(_("“model” must be a non-empty string."), "model")
    return body, model


def parse_chat_body(raw: bytes) -> tuple[str, bool, bool, ChatRequest]:
    """(model, stream, include_usage, request) from a request body, or ``InvalidBody``."""
    body, model = _body_and_model(raw)
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise InvalidBody(_("“stream” must be true or false."), "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidBody(_("“stream_options” must be an object."), "stream_options")
    request = ChatRequest(
        messages=_messages(body), max_tokens=_integer(body, "max_tokens", 1),
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0), stop=_stop(body),
        seed=_integer(body, "seed", None),
        extra={k: v for k, v in body.items() if k not in NAMED_FIELDS},
        request_id=f"chatcmpl-{uuid.uuid4().hex}")
    return model, stream, bool(options.get("include_usage")), request


# --- /v1/chat/completions -------------------------------------------------------------


@csrf_exempt
@require_POST
@rotation_notice
async def chat_completions(request: HttpRequest) -> HttpResponse:
    """OpenAI's chat completions, streamed (SSE) or not, through the plugin chain and
    the gateway; a temperature-0 answer may come from the response cache."""
    started = time.perf_counter()
    try:
        try:
            model, streaming, include_usage, chat = parse_chat_body(request.body)
        except InvalidBody:
            await _authenticate(request)  # a refused key is reported before a bad body
            raise
        key = await _admit(request, model, estimate_tokens(chat.messages))
    except KeyRefused as exc:
        return _with_meta(_refused(exc), None)
    except InvalidBody as exc:
        return _with_meta(error_response(400, exc.message, "invalid_request", exc.param), None)
    if model.startswith("workflow/") or "metadata" in chat.extra \
            or "X-OpenClaw-Conversation" in request.headers:
        from . import workflow_api  # the graph runs the plugins itself

        if workflow_api.applies(request, model, chat.extra):
            return await workflow_api.complete(request, key, model, streaming, include_usage,
                                               chat, started)
    chain = await aget_chain()
    try:
        plugged = chain.pre_process(PluginRequest(
            messages=chat.messages, model=model, user=str(key.owner_id or ""),
            api_key=key.prefix))
    except PluginBlocked as exc:
        return _with_meta(_blocked(exc), None)
    chat = replace(chat, messages=plugged.messages)
    facts = RequestFacts(model=plugged.model, messages=plugged.messages, api_key=key.prefix,
                         user=plugged.user, flags=plugged.flags)
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
        return _with_meta(response, None)
    _record_usage(key, completion.usage.total_tokens)
    body = {
        "id": chat.request_id, "object": "chat.completion", "created": int(time.time()),
        "model": meta.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.content},
                     "logprobs": None, "finish_reason": completion.finish_reason or "stop"}],
        "usage": _usage(completion.usage),
    }
    response = _with_meta(JsonResponse(body), meta)
    if cache_key is not None:
        await response_cache.aput(cache_key, {**body, "x_openclaw_route": meta.route})
        response[response_cache.HEADER] = response_cache.MISS
    metrics.observe_overhead(CHAT_ROUTE, meta.overhead_ms() / 1000)
    _log_usage(key, chat, meta, completion.usage, 200, started)
    return response


CHAT_ROUTE = "/v1/chat/completions"


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
    response = _with_meta(JsonResponse(cached), meta)
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


def _usage(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


async def _stream_response(key: ApiKey, facts: RequestFacts, chat: ChatRequest,
                           screen: StreamFilter, include_usage: bool,
                           deadline_s: float | None, started: float) -> HttpResponse:
    """Wait for the first delta (so failover and errors before it get a real status),
    then stream the rest as SSE."""
    meta = GatewayMeta()
    deltas = gateway.stream(facts, chat, meta, deadline_s)
    try:
        first = await anext(deltas, None)
    except (GatewayError, EngineError) as exc:
        response = _failure(exc)
        _log_usage(key, chat, meta, None, response.status_code, started)
        return _with_meta(response, None)
    ttft_s = time.perf_counter() - started
    events = _sse(key, chat, meta, first, deltas, screen, include_usage,
                  lambda usage, status: _log_usage(key, chat, meta, usage, status, started,
                                                   ttft_s))
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return _with_meta(response, meta)


def _event(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


async def _sse(key: ApiKey, chat: ChatRequest, meta: GatewayMeta, first: Delta | None,
               deltas: AsyncIterator[Delta], screen: StreamFilter, include_usage: bool,
               finished: Callable[[Usage, int], None]) -> AsyncIterator[bytes]:
    """The SSE events of a stream: each delta as the plugins' stream hooks let it through
    (a word to mask may be held back until it is whole), the failure of a stream that
    could not be continued as an error event, then the finish with OpenClaw's
    metadata (which models answered, what the plugins did) and the usage."""
    base = {"id": chat.request_id, "object": "chat.completion.chunk",
            "created": int(time.time()), "model": meta.model}

    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> bytes:
        return _event({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                            "finish_reason": finish}], **extra})

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
        status = getattr(exc, "http_status", None) or getattr(exc, "status", 502)
        yield _event(error_body(status, exc.message, exc.code))
        yield b"data: [DONE]\n\n"
        return
    except PluginBlocked as exc:
        status = 400
        yield _event(error_body(400, exc.message, "content_blocked"))
        yield b"data: [DONE]\n\n"
        return
    except BaseException:
        status = 499  # the client went away (nginx's code for it): the stream was cancelled
        raise
    finally:
        usage = usage or Usage(estimate_tokens(chat.messages), counted)
        _record_usage(key, usage.total_tokens)
        metrics.observe_overhead(CHAT_ROUTE, meta.overhead_ms() / 1000)
        finished(usage, status)
    yield chunk({}, finish or "stop", x_openclaw={
        "model": meta.model, "route": meta.route, "models_tried": meta.models_tried,
        "models": meta.models or [meta.model], "overhead_ms": round(meta.overhead_ms(), 1),
        "plugin_actions": [*screen.request.metadata.get("plugin_actions", []),
                           *screen.metadata.get("plugin_actions", [])]})
    if include_usage:
        yield _event({**base, "choices": [], "usage": _usage(usage)})
    yield b"data: [DONE]\n\n"


# --- /v1/embeddings -------------------------------------------------------------------

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit on the items of one request


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
    body, model = _body_and_model(raw)
    if "input" not in body:
        raise InvalidBody(_("“input” is required."), "input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise InvalidBody(_("“encoding_format” must be “float” or “base64”."),
                          "encoding_format")
    return model, _embedding_texts(body["input"]), encoding, _integer(body, "dimensions", 1)


async def _embed(model: str, texts: list[str]) -> tuple[EmbeddingResult, GatewayMeta]:
    """Vectors from the model's enabled instances, by weight, healthy ones first; a
    retryable failure moves on to the next instance. No routing rules apply here."""
    meta = GatewayMeta(model=model, models_tried=[model], models=[model])
    instances = [e async for e in ModelEndpoint.objects.filter(name=model, enabled=True)]
    ordered = gateway.weighted_order(instances)
    if not ordered:
        raise GatewayError(404, "model_not_found",
                           _("The model “%(model)s” does not exist or has no enabled "
                             "instance.") % {"model": model})
    last_error: EngineError | None = None
    for instance in ordered:
        meta.instance_id = instance.pk
        engine = build_engine(endpoint_config(instance))
        started = time.perf_counter()
        try:
            return await engine.embed(texts), meta
        except EngineError as exc:
            if not exc.retryable:
                raise
            last_error = exc
        finally:
            meta.engine_seconds += time.perf_counter() - started
            await engine.aclose()
    assert last_error is not None
    raise last_error


def _shaped(vector: list[float], dimensions: int | None) -> list[float]:
    """``vector`` cut to ``dimensions`` and scaled back to unit length, as OpenAI does."""
    if dimensions is None or dimensions >= len(vector):
        return vector
    cut = vector[:dimensions]
    norm = math.sqrt(sum(v * v for v in cut)) or 1.0
    return [v / norm for v in cut]


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


@csrf_exempt
@require_POST
@rotation_notice
async def embeddings(request: HttpRequest) -> HttpResponse:
    """OpenAI's embeddings: one vector per input, in input order."""
    try:
        try:
            model, texts, encoding, dimensions = parse_embeddings_body(request.body)
        except InvalidBody:
            await _authenticate(request)  # a refused key is reported before a bad body
            raise
        estimate = estimate_tokens([{"role": "user", "content": t} for t in texts])
        key = await _admit(request, model, estimate)
    except KeyRefused as exc:
        return _with_meta(_refused(exc), None)
    except InvalidBody as exc:
        return _with_meta(error_response(400, exc.message, "invalid_request", exc.param), None)
    try:
        result, meta = await _embed(model, texts)
    except GatewayError as exc:
        return _with_meta(error_response(exc.status, exc.message, exc.code), None)
    except EngineError as exc:
        return _with_meta(engine_error_response(exc), None)
    if dimensions is not None and dimensions > len(result.vectors[0]):
        return _with_meta(error_response(
            400, _("“dimensions” may be at most %(n)d for this model.")
            % {"n": len(result.vectors[0])}, "invalid_request", "dimensions"), meta)
    tokens = result.prompt_tokens or estimate
    _record_usage(key, tokens)
    data = [{"object": "embedding", "index": index,
             "embedding": _encoded(_shaped(vector, dimensions), encoding)}
            for index, vector in enumerate(result.vectors)]
    return _with_meta(JsonResponse({
        "object": "list", "data": data, "model": meta.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}), meta)


# --- /v1/key/successor (OpenClaw's own) ----------------------------------------------------


@csrf_exempt
@require_POST
async def key_successor(request: HttpRequest) -> HttpResponse:
    """Hand the successor of a rotated key, once, to the holder of the old key
    (still valid during its grace period)."""
    try:
        key = await _authenticate(request)
        successor, secret = await sync_to_async(claim_successor)(key)
    except KeyRefused as exc:
        return _refused(exc)
    return JsonResponse({"object": "api_key", "prefix": successor.prefix, "key": secret,
                         "old_key_works_until": key.grace_until.isoformat()})
