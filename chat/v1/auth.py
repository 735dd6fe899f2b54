"""How a ``/v1`` request meets admission (``routing.admission``): its bearer key, the
client address behind trusted proxies, the key kept on the request for the answer's
headers; the ``Ticket`` it gets is settled with its tokens once the answer is known."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponseBase, JsonResponse

from core.client_ip import request_client_ip
from routing.admission import Ticket
from routing.admission import admit as admit_request
from routing.admission import authenticate as authenticate_key
from routing.key_models import ApiKey
from routing.keys import KeyRefused

from .wire import ApiRequest, error_response

ROTATION_HEADER = "x-openclaw-key-rotated"

# A coroutine function, as django-stubs' ``path()`` types an async view.
View = Callable[..., Coroutine[Any, Any, HttpResponseBase]]


def bearer(request: ApiRequest | HttpRequest) -> str | None:
    """The key a request presents: a bearer token (OpenAI's clients), else the
    ``x-api-key`` header (Anthropic's)."""
    header = request.headers.get("Authorization", "")
    scheme, _sep, secret = header.partition(" ")
    if scheme.lower() == "bearer" and secret.strip():
        return secret.strip()
    return request.headers.get("x-api-key") or None


async def authenticate(request: ApiRequest) -> ApiKey:
    """The request's key, valid from this address (no limits counted), or ``KeyRefused``."""
    key = await sync_to_async(authenticate_key)(bearer(request), request_client_ip(request))
    request.openclaw_key = key
    return key


async def admit(request: ApiRequest, model: str, tokens: int,
                max_tokens: int | None = None) -> Ticket:
    """Authenticate, check the model scope and count the request against the key's
    limits (its prompt's ``tokens`` must fit; ``max_tokens`` is reserved with them),
    from the event loop, or ``KeyRefused``. Settle the ticket when the answer is known."""
    ticket = await admit_request(secret=bearer(request), client_addr=request_client_ip(request),
                                 model=model, tokens=tokens, reserve=max_tokens or 0,
                                 prefetch=True)
    request.openclaw_key = ticket.key
    return ticket


def refused(exc: KeyRefused) -> JsonResponse:
    return error_response(exc.status, exc.message, exc.code, retry_after=exc.retry_after)


def rotation_notice(view: View) -> View:
    """Tell the holder of a rotated key, on every answer during its grace period,
    that a successor waits for it (``POST /v1/key/successor``)."""

    @functools.wraps(view)
    async def wrapped(request: ApiRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = await view(request, *args, **kwargs)
        key = getattr(request, "openclaw_key", None)
        if key is not None and key.grace_until is not None:
            response[ROTATION_HEADER] = f"grace-until={key.grace_until.isoformat()}"
        return response

    return wrapped
