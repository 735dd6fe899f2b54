"""``/mcp``: OpenClaw's workflows and public tools for any MCP client, over Streamable
HTTP, served by the official ``mcp`` SDK (``mcp.server.lowlevel.Server`` behind its
``StreamableHTTPSessionManager``); what it offers and one call are ``chat.mcp_tools``.

**Who may.** Every request presents an OpenClaw API key (``Authorization: Bearer <key>``
or ``x-api-key``) and meets the same admission as ``/v1`` (``routing.admission``),
here at the HTTP level, before the MCP layer, with ``/v1``'s error body
(``{"error": {"message", "type", "code"}}``): no key or a bad one 401, a network or a
scope the key does not allow 403, a spent rpm / tpm / budget 429 (``Retry-After``).
The requests that do work — ``tools/list`` and ``tools/call`` — are admitted and
counted against the key's limits (a workflow's call with its scope — the workflow, the
model it picks — and its message's tokens; the run's real tokens settle the ticket);
the protocol's own (``initialize``, notifications, ``ping``) are authenticated only,
like ``/v1/models``, so a client's handshake does not spend its rpm.

**Stateless.** The session manager runs in stateless mode with JSON responses: each
POST carries one JSON-RPC message and gets its answer in the body; there is no
``Mcp-Session-Id``, nothing held between requests, so any web replica (or uvicorn
worker) answers any request and no load-balancer affinity is needed. ``GET`` (a
server-to-client stream) and ``DELETE`` (ending a session) have nothing to serve: 405,
as the transport allows. Clients of the 2026-07-28 protocol (no handshake, each request
on its own) are served by the same manager. A workflow run that reaches a human-approval
node answers at once (``waiting``): no request waits on a person.

**Lifespan.** The session manager needs its ``run()`` context (a task group) entered
before it serves. ``openclaw web`` starts uvicorn with ``--lifespan off`` (Channels'
``ProtocolTypeRouter`` has no ``lifespan`` route), so instead the first ``/mcp`` request
of each event loop starts it, in a task of its own that stays in ``run()`` until the
loop ends (the server's shutdown cancels it, which closes the manager). Each uvicorn
worker process has its own loop, hence its own manager — fine, as nothing is shared
between requests — and this works with lifespan on or off, under any ASGI server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, cast

import mcp_types as types
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse
from django.utils import translation
from django.utils.translation import gettext as _
from mcp.server import Server, ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from starlette.types import Message, Receive, Scope, Send

from core import metrics
from core.client_ip import client_ip
from core.logging import REQUEST_ID_HEADER, bind, request_id, request_id_from, unbind
from core.outage import DB_UNAVAILABLE
from core.redis_pipeline import RedisUnavailable
from routing.admission import Ticket, admit, authenticate
from routing.key_models import ApiKey
from routing.keys import KeyRefused
from routing.rules import estimate_tokens

from . import mcp_tools
from .v1.asgi import BodyTooLarge, Headers, host_allowed, is_secure, language
from .v1.wire import error_response

logger = logging.getLogger(__name__)

PATH = "/mcp"
COUNTED = frozenset({"tools/list", "tools/call"})  # the requests that do work
SCOPE_KEY = "openclaw.mcp"  # where the admitted request travels in the ASGI scope
MAX_BODY_BYTES = 4 * 1024 * 1024  # the SDK's own default limit


@dataclass
class Admitted:
    """A request let in: its key, the ticket that counted it (None: authenticated only),
    the language its texts are in; settled once, with the tokens its call used."""

    key: ApiKey
    ticket: Ticket | None = None
    language: str | None = None
    settled: bool = field(default=False)

    def settle(self, tokens: int) -> None:
        if self.ticket is not None and not self.settled:
            self.settled = True
            self.ticket.settle_soon(tokens)


# --- the MCP server: its handlers read the admitted request from the scope ---------------


def _admitted(ctx: ServerRequestContext[Any, Any]) -> Admitted:
    found = getattr(ctx.request, "scope", {}).get(SCOPE_KEY)
    if not isinstance(found, Admitted):  # only reachable past McpRouter, which sets it
        raise MCPError(types.INVALID_REQUEST, _("No API key."))
    return found


@contextmanager
def _language(admitted: Admitted) -> Iterator[None]:
    if admitted.language is None:
        yield
        return
    with translation.override(admitted.language):
        yield


@contextmanager
def _guarded(method: str) -> Iterator[None]:
    """A handler's failure as a protocol error with a message for people: the SDK would
    send the exception's own text (a database error's, say) to the client."""
    try:
        yield
    except MCPError:
        raise
    except RedisUnavailable as exc:
        logger.error("/mcp %s: %s", method, exc)
        raise MCPError(types.INTERNAL_ERROR, _("The gateway's shared state (Redis) is "
                                               "unavailable; try again shortly.")) from None
    except DB_UNAVAILABLE as exc:
        logger.error("/mcp %s: the database is unavailable: %s", method, exc)
        raise MCPError(types.INTERNAL_ERROR, _("The gateway's database is unavailable; try "
                                               "again shortly.")) from None
    except Exception:
        logger.exception("/mcp %s failed", method)
        raise MCPError(types.INTERNAL_ERROR, _("Internal error; see the server log.")) from None


async def list_tools(ctx: ServerRequestContext[Any, Any],
                     params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    """The tools the request's key sees (one page: there are few)."""
    admitted = _admitted(ctx)
    with _language(admitted), _guarded("tools/list"):
        found = await mcp_tools.acatalogue(admitted.key)
        return types.ListToolsResult(tools=found.listed())


async def call_tool(ctx: ServerRequestContext[Any, Any],
                    params: types.CallToolRequestParams) -> types.CallToolResult:
    """One call for the request's key; the tokens it used settle the admission."""
    admitted = _admitted(ctx)
    with _language(admitted), _guarded("tools/call"):
        called = await mcp_tools.call(admitted.key, params.name, params.arguments or {})
    admitted.settle(called.tokens)
    return called.result


def build_server() -> Server[Any]:
    return Server("openclaw", version="1", title="OpenClaw",
                  instructions=_("OpenClaw's published workflows (workflow_<slug>: one "
                                 "conversation turn per call) and public tools."),
                  on_list_tools=list_tools, on_call_tool=call_tool)


# --- the session manager, started by the first request of each event loop ----------------


class _Lazy:
    """This event loop's running session manager (see the module's docstring)."""

    loop: asyncio.AbstractEventLoop | None = None
    ready: asyncio.Future[StreamableHTTPSessionManager] | None = None
    task: asyncio.Task[None] | None = None


async def session_manager() -> StreamableHTTPSessionManager:
    """This loop's session manager, started on first use (again if it ever stopped)."""
    loop = asyncio.get_running_loop()
    if _Lazy.loop is not loop or _Lazy.ready is None or _Lazy.task is None \
            or _Lazy.task.done():
        _Lazy.loop, _Lazy.ready = loop, loop.create_future()
        _Lazy.task = loop.create_task(_run_manager(_Lazy.ready), name="mcp-session-manager")
    return await asyncio.shield(_Lazy.ready)


async def _run_manager(ready: asyncio.Future[StreamableHTTPSessionManager]) -> None:
    manager = StreamableHTTPSessionManager(build_server(), stateless=True, json_response=True,
                                           max_request_body_size=MAX_BODY_BYTES)
    try:
        async with manager.run():
            ready.set_result(manager)
            await asyncio.Event().wait()  # until the loop's end cancels it
    except BaseException as exc:
        if not ready.done():
            ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))
        raise


# --- admission at the HTTP level ----------------------------------------------------------


def secret_of(headers: Headers) -> str | None:
    """The key a request presents: a bearer token, else ``x-api-key`` (``/v1``'s rule,
    ``chat.v1.auth.bearer``)."""
    scheme, _sep, secret = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and secret.strip():
        return secret.strip()
    return headers.get("x-api-key") or None


def parse_message(body: bytes) -> dict[str, Any] | None:
    """The JSON-RPC message of a body (None when it is not one object: the SDK says why)."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) else None


async def admission(headers: Headers, client: str, message: dict[str, Any] | None) -> Admitted:
    """Admit the request (``KeyRefused`` refuses it): count a ``tools/*`` request with
    what it runs, authenticate anything else."""
    secret = secret_of(headers)
    method = message.get("method") if message else None
    if method not in COUNTED:
        return Admitted(await sync_to_async(authenticate)(secret, client))
    run = await _what_it_runs(message) if method == "tools/call" else {}
    ticket = await admit(secret=secret, client_addr=client, **run)
    return Admitted(ticket.api_key, ticket)


async def _what_it_runs(message: dict[str, Any] | None) -> dict[str, Any]:
    """The scope and tokens a ``tools/call`` is admitted with: a workflow's slug, the
    model it picks, its own model and the message's estimated tokens."""
    params = (message or {}).get("params")
    params = params if isinstance(params, dict) else {}
    name, arguments = params.get("name"), params.get("arguments")
    arguments = arguments if isinstance(arguments, dict) else {}
    if not isinstance(name, str):
        return {}
    workflow = await mcp_tools.aworkflow_named(name)
    if workflow is None:
        return {}
    model = arguments.get("model") or None
    text = arguments.get("message")
    tokens = estimate_tokens([{"role": "user", "content": text}]) \
        if isinstance(text, str) and "resume" not in arguments else 0
    return {"workflow": workflow.slug, "own_model": workflow.default_model or None,
            "model": model if isinstance(model, str) else None, "tokens": tokens}


# --- the ASGI edge ------------------------------------------------------------------------


def _refusal(exc: KeyRefused) -> JsonResponse:
    response = error_response(exc.status, exc.message, exc.code, retry_after=exc.retry_after)
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="openclaw"'
    return response


async def _send_json(response: JsonResponse, send: Send) -> None:
    content = response.content
    headers = [(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in response.items()]
    headers.append((b"content-length", str(len(content)).encode()))
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": headers})
    await send({"type": "http.response.body", "body": content})


def max_body_bytes() -> int:
    """The body limit: the SDK's, or the site's when lower."""
    return min(MAX_BODY_BYTES, settings.OPENCLAW_MAX_REQUEST_BYTES)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body; None when the client left; ``BodyTooLarge`` past ``limit``."""
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


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the SDK: the body already read, then the client's own messages
    (its disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


class McpRouter:
    """ASGI app: ``/mcp`` to the MCP server (after admission), the rest to ``fallback``."""

    def __init__(self, fallback: Callable):
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in (PATH, PATH + "/"):
            return await self.fallback(scope, receive, send)
        headers = Headers((k.decode("latin-1").lower(), v.decode("latin-1"))
                          for k, v in scope["headers"])
        tokens = bind(request_id=request_id_from(headers.get(REQUEST_ID_HEADER)))
        accept = headers.get("accept-language")
        lang = language(accept) if accept else None
        started = time.perf_counter()
        status = [0]

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = {**message, "headers": [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), request_id.get().encode())]}
            await send(message)

        try:
            with translation.override(lang) if lang else nullcontext():
                await self._serve(scope, headers, lang, receive, observed)
        finally:
            if status[0]:  # else the client left before an answer
                metrics.observe_request(PATH, scope["method"], status[0],
                                        time.perf_counter() - started)
            unbind(tokens)

    async def _serve(self, scope: Scope, headers: Headers, lang: str | None,
                     receive: Receive, send: Send) -> None:
        refusal = _refusal_before_body(scope, headers)
        if refusal is not None:
            return await _send_json(refusal, send)
        limit = max_body_bytes()
        try:
            body = await _read_body(receive, limit)
        except BodyTooLarge:
            return await _send_json(error_response(413, _(
                "The request body is larger than %(n)d bytes.") % {"n": limit},
                "request_too_large"), send)
        if body is None:
            return  # the client left
        admitted = await _admitted_or_refusal(scope, headers, body)
        if isinstance(admitted, JsonResponse):
            return await _send_json(admitted, send)
        admitted.language = lang
        manager = await session_manager()
        try:
            await manager.handle_request({**scope, SCOPE_KEY: admitted},
                                         _replay(body, receive), send)
        finally:
            admitted.settle(0)  # a call that settled nothing itself (refused, failed)


def _refusal_before_body(scope: Scope, headers: Headers) -> JsonResponse | None:
    """What ``/v1``'s edge refuses too (a host not allowed, plain HTTP where HTTPS is
    required: a redirect that keeps the POST), and any method but POST."""
    if not host_allowed(headers):
        return error_response(400, _("The Host header is not one this server answers for "
                                     "(ALLOWED_HOSTS)."), "invalid_host")
    if settings.SECURE_SSL_REDIRECT and not is_secure(cast(dict, scope), headers):
        response = error_response(308, _("Use HTTPS."), "https_required")
        host = settings.SECURE_SSL_HOST or headers.get("host", "")
        response["Location"] = f"https://{host}{scope['path']}"
        return response
    if scope["method"] != "POST":
        response = error_response(405, _("/mcp answers POST only (stateless Streamable HTTP: "
                                         "no server-to-client stream, no session)."),
                                  "method_not_allowed")
        response["Allow"] = "POST"
        return response
    return None


async def _admitted_or_refusal(scope: Scope, headers: Headers,
                               body: bytes) -> Admitted | JsonResponse:
    """The admitted request, or the refusal to answer with (``/v1``'s shapes)."""
    client = scope.get("client")
    address = client_ip(client[0] if client else "", headers.get("x-forwarded-for"))
    try:
        return await admission(headers, address, parse_message(body))
    except KeyRefused as exc:
        return _refusal(exc)
    except RedisUnavailable:
        return error_response(503, _("The gateway's shared state (Redis) is unavailable; "
                                     "try again shortly."), "service_unavailable", retry_after=1)
    except DB_UNAVAILABLE:
        return error_response(503, _("The gateway's database is unavailable; try again "
                                     "shortly."), "service_unavailable", retry_after=2)
