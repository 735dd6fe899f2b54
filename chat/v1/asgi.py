"""The hot ``/v1`` routes served straight from ASGI, ahead of Django's handler.

Django's ASGI handler runs every request through the middleware chain and sends the
``request_started`` / ``request_finished`` signals, each a hop to a worker thread; with
the web server that is a floor of about 4.5 ms per request on this project's 2-core
reference machine, more than the whole budget of a gateway that should add ≤ 2 ms. The
views of ``chat.v1`` are async and need none of it (no session, no CSRF — bearer keys —,
no templates), so ``V1Router`` calls them directly with a ``FastRequest`` (the
``ApiRequest`` the views read) and sends their Django responses back as ASGI messages.
Everything else — the admin, the studio, ``/v1`` routes that are not hot (files,
batches, key successor) — goes to Django as before.

What the middleware did that still matters is done here, from the same settings:

- the ``Host`` header is checked against ``ALLOWED_HOSTS`` (400);
- a body over ``OPENCLAW_MAX_REQUEST_BYTES`` is refused (413) before it is read whole;
- ``SECURE_SSL_REDIRECT`` redirects plain HTTP to HTTPS (301), and an HTTPS answer
  carries ``Strict-Transport-Security`` (``SECURE_HSTS_*``), ``X-Content-Type-Options``
  and ``Referrer-Policy`` like Django's ``SecurityMiddleware`` adds;
- the request id (``core.logging.request_id_from``, the middleware's own rule) is bound
  for the log lines and sent back as ``X-Request-ID``;
- the language of the error messages follows ``Accept-Language``;
- a client that goes away mid-stream cancels the stream (and so the backend call).

Each refusal is in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from django.conf import settings
from django.http import HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.http.request import split_domain_port, validate_host
from django.utils import translation
from django.utils.translation import gettext as _

from core import metrics, shared_state
from core.i18n import accepted
from core.logging import REQUEST_ID_HEADER, bind, request_id, request_id_from, unbind
from core.outage import DB_UNAVAILABLE
from core.redis_pipeline import RedisUnavailable
from routing.key_models import ApiKey

from . import completions, legacy, messages, responses, views
from .messages_wire import as_anthropic_error
from .wire import error_response

logger = logging.getLogger(__name__)

View = Callable[[Any], Awaitable[HttpResponseBase]]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

MESSAGES = "/v1/messages"  # whose errors take Anthropic's shape
ROUTES: dict[str, View] = {
    "/v1/chat/completions": completions.chat_completions,
    "/v1/completions": legacy.completions,
    "/v1/responses": responses.responses,
    MESSAGES: messages.messages,
    "/v1/embeddings": views.embeddings,
    "/v1/models": views.models,
}


class Headers(dict):
    """Request headers by lower-case name (what ``request.headers.get`` gives Django
    views, case-insensitively)."""

    def get(self, name: str, default: Any = None) -> Any:
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> Any:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


class FastRequest:
    """The ``ApiRequest`` of a request the router serves itself."""

    __slots__ = ("method", "path", "headers", "body", "META", "openclaw_key", "secure")

    def __init__(self, scope: dict, headers: Headers, body: bytes, secure: bool):
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers = headers
        self.body = body
        client = scope.get("client")
        self.META: dict[str, Any] = {"REMOTE_ADDR": client[0] if client else ""}
        self.openclaw_key: ApiKey | None = None
        self.secure = secure


@functools.lru_cache(maxsize=256)
def language(accept: str) -> str | None:
    """The supported language an ``Accept-Language`` header asks for first (None: the
    default)."""
    return accepted(accept)


@functools.lru_cache(maxsize=256)
def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)


def host_allowed(headers: Headers) -> bool:
    """``Host`` (or ``X-Forwarded-Host`` when ``USE_X_FORWARDED_HOST``) is one of
    ``ALLOWED_HOSTS``, as Django's ``HttpRequest.get_host`` decides it."""
    host = (settings.USE_X_FORWARDED_HOST and headers.get("x-forwarded-host")) \
        or headers.get("host", "")
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return _host_allowed(host, tuple(allowed))


def is_secure(scope: dict, headers: Headers) -> bool:
    """HTTPS, directly or at a proxy named by ``SECURE_PROXY_SSL_HEADER``."""
    if settings.SECURE_PROXY_SSL_HEADER:
        header, secure_value = settings.SECURE_PROXY_SSL_HEADER
        name = header.removeprefix("HTTP_").replace("_", "-").lower()
        value = headers.get(name)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") == "https"


def security_headers(response: HttpResponseBase, secure: bool) -> None:
    """What ``SecurityMiddleware`` adds to an answer."""
    if secure and settings.SECURE_HSTS_SECONDS and "Strict-Transport-Security" not in response:
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        response["Strict-Transport-Security"] = value
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if settings.SECURE_REFERRER_POLICY:
        response.headers.setdefault("Referrer-Policy", settings.SECURE_REFERRER_POLICY)


class BodyTooLarge(Exception):
    pass


async def _body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when the client left before sending it all;
    ``BodyTooLarge`` past ``limit`` bytes (nothing more is read)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _headers(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in response.items()]


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send_stream(response: StreamingHttpResponse, send: Send,
                       receive: Receive) -> None:
    """Send a streaming response chunk by chunk; stop (cancelling the producer, which
    closes the backend call) when the client disconnects."""
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": _headers(response)})

    async def pump() -> None:
        async for chunk in response:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    producer = asyncio.ensure_future(pump())
    watcher = asyncio.ensure_future(_until_disconnect(receive))
    try:
        await asyncio.wait((producer, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (producer, watcher):
            if not task.done():
                task.cancel()
        await asyncio.gather(producer, watcher, return_exceptions=True)
    if producer.done() and not producer.cancelled() and producer.exception() is not None:
        logger.error("stream of %s failed", response, exc_info=producer.exception())


async def _send_whole(response: HttpResponse, send: Send) -> None:
    content = response.content
    headers = _headers(response)
    headers.append((b"content-length", str(len(content)).encode()))
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": headers})
    await send({"type": "http.response.body", "body": content})


def _redirect_to_https(scope: dict, headers: Headers) -> HttpResponse:
    host = settings.SECURE_SSL_HOST or headers.get("host", "")
    query = scope.get("query_string", b"").decode("latin-1")
    target = f"https://{host}{scope['path']}" + (f"?{query}" if query else "")
    response = HttpResponse(status=301)
    response["Location"] = target
    return response


class V1Router:
    """ASGI app: the hot ``/v1`` routes to ``chat.v1``'s views directly, the rest to
    ``fallback`` (Django)."""

    def __init__(self, fallback: Callable):
        self.fallback = fallback

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        view = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if view is None:
            return await self.fallback(scope, receive, send)
        headers = Headers((k.decode("latin-1").lower(), v.decode("latin-1"))
                          for k, v in scope["headers"])
        shared_state.forget()
        tokens = bind(request_id=request_id_from(headers.get(REQUEST_ID_HEADER)))
        accept = headers.get("accept-language")
        lang = language(accept) if accept else None
        try:
            if lang is None:
                return await self._serve(view, scope, headers, receive, send)
            with translation.override(lang):
                return await self._serve(view, scope, headers, receive, send)
        finally:
            unbind(tokens)

    async def _serve(self, view: View, scope: dict, headers: Headers, receive: Receive,
                     send: Send) -> None:
        started = time.perf_counter()
        secure = is_secure(scope, headers)
        refusal = self._refusal(scope, headers, secure)
        if refusal is None:
            try:
                body = await _body(receive, settings.OPENCLAW_MAX_REQUEST_BYTES)
            except BodyTooLarge:
                refusal = _too_large()
            else:
                if body is None:
                    return  # the client left
                response = await self._respond(view, FastRequest(scope, headers, body, secure))
                if scope["path"] == MESSAGES and 500 <= response.status_code < 600 \
                        and not response.streaming:
                    response = as_anthropic_error(cast(JsonResponse, response))
        if refusal is not None:
            response = refusal
            if scope["path"] == MESSAGES and refusal.status_code >= 400:
                response = as_anthropic_error(cast(JsonResponse, refusal))
            response["Connection"] = "close"  # the unread body stays unread
        response[REQUEST_ID_HEADER] = request_id.get()
        security_headers(response, secure)
        metrics.observe_request(scope["path"], scope["method"], response.status_code,
                                time.perf_counter() - started)
        # ``streaming`` tells Django's two kinds apart (the stubs type it as a plain bool).
        if response.streaming:
            return await _send_stream(cast(StreamingHttpResponse, response), send, receive)
        await _send_whole(cast(HttpResponse, response), send)

    @staticmethod
    def _refusal(scope: dict, headers: Headers, secure: bool) -> HttpResponse | None:
        """Refused before its body is read: a host not allowed, plain HTTP where HTTPS
        is required, a declared length over the limit."""
        if not host_allowed(headers):
            return error_response(400, _("The Host header is not one this server answers "
                                         "for (ALLOWED_HOSTS)."), "invalid_host")
        if settings.SECURE_SSL_REDIRECT and not secure:
            return _redirect_to_https(scope, headers)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and (
                int(length) > settings.OPENCLAW_MAX_REQUEST_BYTES):
            return _too_large()
        return None

    @staticmethod
    async def _respond(view: View, request: FastRequest) -> HttpResponseBase:
        try:
            return await view(request)
        except RedisUnavailable as exc:  # keys, limits and circuits live there
            logger.error("%s %s: %s", request.method, request.path, exc)
            return error_response(503, _("The gateway's shared state (Redis) is "
                                         "unavailable; try again shortly."),
                                  "service_unavailable", retry_after=1)
        except DB_UNAVAILABLE as exc:  # a key or table not held in this process's copies
            logger.error("%s %s: the database is unavailable: %s", request.method,
                         request.path, exc)
            return error_response(503, _("The gateway's database is unavailable; try "
                                         "again shortly."),
                                  "service_unavailable", retry_after=2)
        except Exception:  # a bug, not a client's fault: OpenAI's shape, details in the log
            logger.exception("%s %s failed", request.method, request.path)
            return error_response(500, _("Internal error; see the server log."),
                                  "internal_error")


def _too_large() -> HttpResponse:
    return error_response(413, _("The request body is larger than %(n)d bytes.")
                          % {"n": settings.OPENCLAW_MAX_REQUEST_BYTES}, "request_too_large")
