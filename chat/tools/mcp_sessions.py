"""How OpenClaw holds its sessions with MCP servers (``chat.tools.mcp_client`` says what
it does with them), with the official ``mcp`` SDK.

An HTTP server (Streamable HTTP or SSE) keeps one session per event loop: a new one per
call would cost the protocol's discover (or initialize) round trip and a connection. The
SDK's context managers must be left by the task that entered them, so a task of its own
owns each session while any task of the loop calls on it. A session is reopened when it
broke (its transport's stream ended: the server went away) or when the server's row
changed (``updated_at``); one that is replaced closes once its calls are done.
``run_once`` opens a session for one piece of work (discovery, a stdio call in the
worker). ``describe`` turns what went wrong into one line for a person or a model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
import httpx2
from django.utils.translation import gettext as _
from mcp import Client, MCPError
from mcp import types as mcp_types
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from pydantic import ValidationError

from .models import McpServer, Transport
from .registry import ToolFailed

logger = logging.getLogger(__name__)

SSE_READ_TIMEOUT_S = 300.0  # an SSE stream silent this long is taken for dead
# The SDK's error when the server forgot the session (it restarted; HTTP 404): the request
# did not run, so it may go again on a new session.
SESSION_GONE = (mcp_types.INVALID_REQUEST, "Session terminated")


@dataclass(frozen=True)
class ServerConfig:
    """A plain snapshot of an ``McpServer`` row: what a call needs, nothing of the ORM."""

    id: int
    name: str
    transport: str
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    command: str = ""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0
    enabled: bool = True
    updated_at: datetime | None = None

    @classmethod
    def of(cls, server: McpServer) -> ServerConfig:
        return cls(id=server.pk, name=server.name, transport=server.transport, url=server.url,
                   headers=dict(server.headers or {}), command=server.command,
                   args=list(server.args or []), env=dict(server.env or {}),
                   timeout_s=server.timeout_s, enabled=server.enabled,
                   updated_at=server.updated_at)


@dataclass
class _Wire:
    """What the HTTP client saw that the SDK's errors leave out: the last error status."""

    status: int | None = None

    async def note(self, response: httpx2.Response) -> None:
        if response.status_code >= 400:
            self.status = response.status_code


def describe(exc: BaseException, wire: _Wire | None = None) -> str:
    """One line saying why talking to a server failed."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]  # the transport's task group wraps what happened
    status = wire.status if wire else None
    if isinstance(exc, httpx2.HTTPStatusError):
        status = exc.response.status_code
    if status in (401, 403):
        return _("the server refused the credentials (HTTP %(status)d); check the "
                 "headers") % {"status": status}
    if isinstance(exc, httpx2.ConnectError | ConnectionError):
        return _("cannot connect (%(error)s)") % {"error": exc}
    if isinstance(exc, TimeoutError | httpx2.TimeoutException):
        return _("no answer in time")
    if isinstance(exc, MCPError):
        text = exc.message
        if exc.code == mcp_types.CONNECTION_CLOSED:
            text = _("the connection closed (is the server down?)")
    else:
        text = f"{exc.__class__.__name__}: {exc}"
    if status:
        text = _("HTTP %(status)d: %(error)s") % {"status": status, "error": text}
    return text[:2000]


def unreachable(config: ServerConfig, reason: str) -> ToolFailed:
    return ToolFailed(_("The MCP server “%(server)s” failed: %(reason)s")
                      % {"server": config.name, "reason": reason})


class _Watched:
    """A transport's read stream that tells when it ends: the server went away, and the
    session's next call would fail without reaching it, so the caller reopens first."""

    def __init__(self, inner: Any, on_end: Callable[[], None]):
        self.inner, self.on_end = inner, on_end

    @property
    def last_context(self) -> Any:  # the sender's context, which the SDK's dispatcher reads
        return getattr(self.inner, "last_context", None)

    def __aiter__(self) -> _Watched:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.inner.__anext__()
        except (StopAsyncIteration, anyio.ClosedResourceError):
            self.on_end()
            raise

    async def __aenter__(self) -> _Watched:
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self.inner.__aexit__(*exc_info)


def _transport(config: ServerConfig, wire: _Wire, stack: AsyncExitStack) -> Any:
    """The SDK's transport to an HTTP server, with the row's headers."""
    hooks = {"response": [wire.note]}
    if config.transport == Transport.SSE:
        def factory(headers=None, timeout=None, auth=None) -> httpx2.AsyncClient:
            return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth,
                                      event_hooks=hooks)

        return sse_client(config.url, headers=config.headers, timeout=config.timeout_s,
                          sse_read_timeout=SSE_READ_TIMEOUT_S, httpx_client_factory=factory)
    http = httpx2.AsyncClient(headers=config.headers, event_hooks=hooks,
                              timeout=httpx2.Timeout(config.timeout_s,
                                                     read=max(config.timeout_s, 300.0)))
    stack.push_async_callback(http.aclose)
    return streamable_http_client(config.url, http_client=http)


async def _connect(config: ServerConfig, stack: AsyncExitStack, wire: _Wire,
                   on_end: Callable[[], None] | None = None, transport: Any = None) -> Client:
    """A connected SDK client, its context entered on ``stack`` (by the calling task)."""
    transport = transport or _transport(config, wire, stack)
    if on_end is not None:
        read_stream, write_stream = await stack.enter_async_context(transport)
        transport = nullcontext((_Watched(read_stream, on_end), write_stream))
    client = Client(transport, read_timeout_seconds=config.timeout_s, cache=None)
    return await stack.enter_async_context(client)


class _Connection:
    """One session with an HTTP server, held open by a task of its own for this event
    loop's calls (see the module's docstring). Retired when it broke or its row changed;
    it closes once the calls still using it are done."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.wire = _Wire()
        self.client: Client | None = None
        self.users = 0
        self.ended = False
        self.closing = asyncio.Event()
        self.ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # seen
        self.task = asyncio.create_task(self._own(), name=f"mcp-session:{config.name}")

    @property
    def usable(self) -> bool:
        return not (self.ended or self.closing.is_set() or self.task.done())

    async def _own(self) -> None:
        try:
            async with AsyncExitStack() as stack:
                self.client = await _connect(self.config, stack, self.wire, self.retire)
                self.ready.set_result(self.client)
                await self.closing.wait()
        except asyncio.CancelledError:
            self.ready.cancel()
            raise
        except Exception as exc:  # the server's trouble: the callers hear it via ready
            if not self.ready.done():
                self.ready.set_exception(exc)
            logger.info("MCP session with %s ended: %s", self.config.name, describe(exc))
        finally:
            self.ended = True

    def retire(self) -> None:
        self.ended = True
        if self.users == 0:
            self.closing.set()

    def release(self) -> None:
        self.users -= 1
        if self.ended and self.users == 0:
            self.closing.set()


_pools: dict[asyncio.AbstractEventLoop, dict[int, _Connection]] = {}


def _pool() -> dict[int, _Connection]:
    """The sessions of the running loop (the pools of loops closed since are dropped)."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        for closed in [known for known in _pools if known.is_closed()]:
            del _pools[closed]
        pool = _pools[loop] = {}
    return pool


async def _connection(config: ServerConfig) -> _Connection:
    """This loop's open session with the server, opened (or reopened) if need be."""
    pool = _pool()
    connection = pool.get(config.id)
    if connection is not None and (not connection.usable
                                   or connection.config.updated_at != config.updated_at):
        connection.retire()
        connection = None
    if connection is None:
        connection = pool[config.id] = _Connection(config)
    try:
        await asyncio.wait_for(asyncio.shield(connection.ready), config.timeout_s)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        connection.retire()
        raise unreachable(config, describe(exc, connection.wire)) from None
    return connection


async def aclose_sessions() -> None:
    """Close the sessions of the running loop (tests; a process that stops)."""
    connections = list(_pool().values())
    _pool().clear()
    for connection in connections:
        connection.closing.set()
    await asyncio.gather(*(connection.task for connection in connections),
                         return_exceptions=True)


async def call_tool(config: ServerConfig, name: str, arguments: dict[str, Any],
                    timeout: float) -> mcp_types.CallToolResult:
    """Tool ``name`` called on this loop's session with the (HTTP) server."""
    for attempt in (1, 2):
        connection = await _connection(config)
        assert connection.client is not None  # ready
        connection.users += 1
        try:
            return await connection.client.call_tool(name, arguments,
                                                     read_timeout_seconds=timeout)
        except MCPError as exc:
            gone = (exc.code, exc.message) == SESSION_GONE
            if gone or exc.code == mcp_types.CONNECTION_CLOSED:
                connection.retire()
            if gone and attempt == 1:
                continue
            raise unreachable(config, describe(exc, connection.wire)) from None
        except (ValidationError, RuntimeError) as exc:  # not an answer MCP allows
            raise unreachable(config, describe(exc)) from None
        finally:
            connection.release()
    raise AssertionError("unreachable")  # pragma: no cover


async def run_once(config: ServerConfig, work: Callable[[Client], Any],
                   transport: Any = None) -> Any:
    """``work`` on a session opened for it alone (over ``transport``, else the row's
    HTTP one), within the server's timeout; ``ToolFailed`` saying why when it fails."""
    wire = _Wire()
    try:
        async with asyncio.timeout(config.timeout_s), AsyncExitStack() as stack:
            return await work(await _connect(config, stack, wire, transport=transport))
    except ToolFailed:
        raise
    except Exception as exc:
        raise unreachable(config, describe(exc, wire)) from None
