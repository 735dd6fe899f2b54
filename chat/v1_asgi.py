"""The hot ``/v1`` routes served straight from ASGI, ahead of Django's handler.

Django's ASGI handler runs every request through the middleware chain and sends the
``request_started`` / ``request_finished`` signals, each a hop to a worker thread; with
the web server that is a floor of about 4.5 ms per request on this project's 2-core
reference machine, more than the whole budget of a gateway that should add ≤ 2 ms. The
views of ``chat.api`` are async and need none of it (no session, no CSRF — bearer
keys —, no templates), so ``V1Router`` calls them directly with a small request
object that carries what they read, and sends their Django responses back as ASGI
messages. Everything else — the admin, the studio, ``/v1`` routes that are not hot
(files, batches, key successor) — goes to Django as before.

What the middleware did that still matters here is done here: the language of the
error messages follows ``Accept-Language``; a client that goes away mid-stream
cancels the stream (and so the backend call).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from django.http import HttpResponse
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation.trans_real import parse_accept_lang_header

from openclaw_site import metrics
from openclaw_site.logging import REQUEST_ID_HEADER, SANE_ID, bind, request_id, unbind
from routing import hot
from routing.resp import RedisUnavailable

from . import api

logger = logging.getLogger(__name__)

View = Callable[[Any], Awaitable[HttpResponse]]

ROUTES: dict[str, View] = {
    "/v1/chat/completions": api.chat_completions,
    "/v1/embeddings": api.embeddings,
    "/v1/models": api.models,
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


class ApiRequest:
    """The part of an ``HttpRequest`` the ``/v1`` views use."""

    __slots__ = ("method", "path", "headers", "body", "META", "openclaw_key")

    def __init__(self, scope: dict, body: bytes):
        self.method = scope["method"]
        self.path = scope["path"]
        self.headers = Headers((k.decode("latin-1").lower(), v.decode("latin-1"))
                               for k, v in scope["headers"])
        self.body = body
        client = scope.get("client")
        self.META = {"REMOTE_ADDR": client[0] if client else ""}
        self.openclaw_key = None


@functools.lru_cache(maxsize=256)
def language(accept: str) -> str | None:
    """The supported language an ``Accept-Language`` header asks for first (None: the
    default)."""
    for tag, _quality in parse_accept_lang_header(accept):
        if tag == "*":
            break
        try:
            return translation.get_supported_language_variant(tag)
        except LookupError:
            continue
    return None


async def _body(receive: Callable) -> bytes | None:
    """The request body, or None when the client left before sending it all."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _headers(response: HttpResponse) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in response.items()]


async def _until_disconnect(receive: Callable) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send_stream(response: HttpResponse, send: Callable, receive: Callable) -> None:
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


class V1Router:
    """ASGI app: the hot ``/v1`` routes to ``chat.api``'s views directly, the rest to
    ``fallback`` (Django)."""

    def __init__(self, fallback: Callable):
        self.fallback = fallback

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        view = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if view is None:
            return await self.fallback(scope, receive, send)
        body = await _body(receive)
        if body is None:
            return
        request = ApiRequest(scope, body)
        hot.forget()
        accept = request.headers.get("accept-language")
        lang = language(accept) if accept else None
        given = request.headers.get(REQUEST_ID_HEADER, "")
        tokens = bind(request_id=given if SANE_ID.match(given) else uuid.uuid4().hex)
        try:
            if lang is None:
                return await self._respond(view, request, send, receive)
            with translation.override(lang):
                return await self._respond(view, request, send, receive)
        finally:
            unbind(tokens)

    @staticmethod
    async def _respond(view: View, request: ApiRequest, send: Callable,
                       receive: Callable) -> None:
        started = time.perf_counter()
        try:
            response = await view(request)
        except RedisUnavailable as exc:  # keys, limits and circuits live there
            logger.error("%s %s: %s", request.method, request.path, exc)
            response = api.error_response(503, _("The gateway's shared state (Redis) is "
                                                 "unavailable; try again shortly."),
                                          "service_unavailable", retry_after=1)
        except Exception:  # a bug, not a client's fault: OpenAI's shape, details in the log
            logger.exception("%s %s failed", request.method, request.path)
            response = api.error_response(500, _("Internal error; see the server log."),
                                          "internal_error")
        response[REQUEST_ID_HEADER] = request_id.get()
        metrics.observe_request(request.path, request.method, response.status_code,
                                time.perf_counter() - started)
        if response.streaming:
            return await _send_stream(response, send, receive)
        content = response.content
        headers = _headers(response)
        headers.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": headers})
        await send({"type": "http.response.body", "body": content})
