"""``/v1/models``, ``/v1/embeddings`` and OpenClaw's ``/v1/key/successor``: thin async
views over admission, the registry and the gateway (``/v1/chat/completions`` is
``chat.v1.completions``)."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Min
from django.http import HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from core.text import object_id
from inference.errors import EngineError
from routing import gateway
from routing.gateway import GatewayError
from routing.key_models import ApiKey
from routing.keys import KeyRefused, claim_successor
from routing.models import ModelEndpoint
from routing.rules import estimate_tokens

from .auth import admit, authenticate, refused, rotation_notice
from .completions import with_meta
from .wire import (
    ApiRequest,
    InvalidBody,
    embedding_item,
    engine_error_response,
    error_response,
    parse_embeddings_body,
)

# --- /v1/models -----------------------------------------------------------------------


def _model_list(key: ApiKey, name: str | None = None) -> list[dict[str, Any]]:
    enabled = ModelEndpoint.objects.filter(enabled=True)
    if name is not None:
        enabled = enabled.filter(name=name)
    rows = enabled.values("name").annotate(created=Min("created_at")).order_by("name")
    allowed = set(key.allowed_models or ())
    return [{"id": row["name"], "object": "model", "created": int(row["created"].timestamp()),
             "owned_by": "openclaw"}
            for row in rows if not allowed or row["name"] in allowed]


@csrf_exempt
@require_GET
@rotation_notice
async def models(request: ApiRequest) -> HttpResponse:
    """The enabled model names this key may use, in OpenAI's list shape."""
    try:
        key = await authenticate(request)
    except KeyRefused as exc:
        return refused(exc)
    data = await sync_to_async(_model_list)(key)
    return JsonResponse({"object": "list", "data": data})


@csrf_exempt
@require_GET
@rotation_notice
async def model(request: ApiRequest, model_id: str) -> HttpResponse:
    """One model this key may use (``models.retrieve``), or 404 ``model_not_found``."""
    try:
        key = await authenticate(request)
    except KeyRefused as exc:
        return refused(exc)
    found = await sync_to_async(_model_list)(key, model_id) if object_id(model_id) else None
    if not found:
        return error_response(404, _("The model “%(model)s” does not exist or has no enabled "
                                     "instance this key may use.") % {"model": model_id},
                              "model_not_found", "model")
    return JsonResponse(found[0])


# --- /v1/embeddings -------------------------------------------------------------------


@csrf_exempt
@require_POST
@rotation_notice
async def embeddings(request: ApiRequest) -> HttpResponse:
    """OpenAI's embeddings: one vector per input, in input order."""
    try:
        try:
            model, texts, encoding, dimensions = parse_embeddings_body(request.body)
        except InvalidBody:
            await authenticate(request)  # a refused key is reported before a bad body
            raise
        estimate = estimate_tokens([{"role": "user", "content": t} for t in texts])
        ticket = await admit(request, model, estimate)
    except KeyRefused as exc:
        return with_meta(refused(exc), None)
    except InvalidBody as exc:
        return with_meta(error_response(400, exc.message, "invalid_request", exc.param), None)
    try:
        result, meta = await gateway.embed(model, texts)
    except (GatewayError, EngineError) as exc:
        ticket.settle_soon(0)  # nothing embedded: the reservation is given back
        if isinstance(exc, EngineError):
            return with_meta(engine_error_response(exc), None)
        return with_meta(error_response(exc.status, exc.message, exc.code), None)
    tokens = result.prompt_tokens or estimate
    ticket.settle_soon(tokens)
    if dimensions is not None and dimensions > len(result.vectors[0]):
        return with_meta(error_response(
            400, _("“dimensions” may be at most %(n)d for this model.")
            % {"n": len(result.vectors[0])}, "invalid_request", "dimensions"), meta)
    data = [embedding_item(index, vector, dimensions, encoding)
            for index, vector in enumerate(result.vectors)]
    return with_meta(JsonResponse({
        "object": "list", "data": data, "model": meta.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}), meta)


# --- /v1/key/successor (OpenClaw's own) ----------------------------------------------------


@csrf_exempt
@require_POST
async def key_successor(request: ApiRequest) -> HttpResponse:
    """Hand the successor of a rotated key, once, to the holder of the old key
    (still valid during its grace period)."""
    try:
        key = await authenticate(request)
        successor, secret = await sync_to_async(claim_successor)(key)
    except KeyRefused as exc:
        return refused(exc)
    assert key.grace_until is not None  # claim_successor refuses a key without one
    return JsonResponse({"object": "api_key", "prefix": successor.prefix, "key": secret,
                         "old_key_works_until": key.grace_until.isoformat()})
