"""HTTP for the ``openai`` engine: endpoint URLs, the pooled ``aiohttp`` session of each
event loop (TLS as httpx did it, proxies from the environment), the server-sent
events parser, the mapping of a backend's error responses to ``inference.errors``, and
the reading of its answers (whole choices, streamed pieces) into the engine interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import re
import ssl
import urllib.request
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, lru_cache
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from django.utils.translation import gettext as _
from yarl import URL

from ..errors import (
    AuthFailed,
    BadRequest,
    ContextTooLong,
    EngineError,
    RateLimited,
    ServerError,
)
from .base import MESSAGE_FIELDS, Choice, Delta, Usage

certifi: ModuleType | None
try:  # optional: the bundle httpx and requests bring; without it, the system's
    import certifi
except ImportError:
    certifi = None

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 300  # of a backend's error message kept in ours
MAX_ERROR_BODY = 64 * 1024
MAX_CONNECTIONS = 512  # per process and event loop, all endpoints together
KEEPALIVE_S = 30  # an idle pooled connection is closed after this
CONTEXT_MESSAGE = re.compile(r"context[ _-]?(length|window|size)|maximum context", re.I)


# -- URLs -------------------------------------------------------------------------------


def endpoint_urls(url: str) -> tuple[str, str]:
    """(chat-completions URL, models URL) for a base, ``…/chat`` or ``…/chat/completions`` URL.

    A URL with no path at all (``http://host:8000``) means the usual ``/v1``.
    """
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    for suffix in ("/chat/completions", "/chat"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    else:
        path = path or "/v1"
    chat = urlunsplit(parts._replace(path=path + "/chat/completions"))
    return chat, urlunsplit(parts._replace(path=path + "/models"))


# -- the shared connection pool ---------------------------------------------------------

@dataclass
class _Pool:
    session: aiohttp.ClientSession
    closer: AsyncGenerator[None, None]  # closes the session when its loop shuts down


_pools: dict[asyncio.AbstractEventLoop, _Pool] = {}


@cache
def _ssl_context() -> ssl.SSLContext:
    """Verification as httpx did it: ``SSL_CERT_FILE`` or ``SSL_CERT_DIR``, else certifi's
    bundle (when installed), else the system's."""
    if cafile := os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=cafile)
    if capath := os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=capath)
    if certifi is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def _new_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_S,
                                     ssl=_ssl_context())
    # No cookie jar: one session serves every endpoint and key, so a cookie one answer
    # set must not ride along with another's requests. No total timeout: ours are per call.
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                 timeout=aiohttp.ClientTimeout(total=None),
                                 headers={"User-Agent": "openclaw"})


async def _close_at_loop_shutdown(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    # A started async generator is closed by the loop's shutdown_asyncgens(), which
    # asyncio.run() (so async_to_sync) and pytest's runners call before closing the
    # loop: the pool of a short-lived loop is closed with it instead of leaking sockets.
    try:
        yield
    finally:
        await session.close()


async def shared_client() -> aiohttp.ClientSession:
    """The running loop's pooled session, created on first use (or after it was closed)."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None or pool.session.closed:
        for stale in [other for other in _pools if other.is_closed()]:
            # Closed without shutdown_asyncgens(): nothing can be awaited on it any more.
            _pools.pop(stale).session.detach()
        session = _new_session()
        pool = _pools[loop] = _Pool(session, _close_at_loop_shutdown(session))
        await anext(pool.closer)
    return pool.session


async def aclose_clients() -> None:
    """Close the running loop's pooled session now (at shutdown, or at the end of a test)."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.closer.aclose()


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def env_proxy(url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for ``url`` (``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY``, less ``NO_PROXY``) and its credentials, as httpx honoured them.
    Remembered per URL while those variables stay the same (reading the whole
    environment costs ~0.4 ms, more than the rest of a gateway request)."""
    names = (*PROXY_VARIABLES, *(n.upper() for n in PROXY_VARIABLES))
    return _env_proxy(url, tuple(os.environ.get(n) for n in names))


@lru_cache(maxsize=256)
def _env_proxy(url: str, _variables: tuple) -> tuple[str | None, aiohttp.BasicAuth | None]:
    proxies = urllib.request.getproxies_environment()
    host = urlsplit(url).hostname
    proxy = proxies.get(urlsplit(url).scheme) or proxies.get("all")
    # proxy_bypass_environment is undocumented, so typeshed leaves it out.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # undocumented
    if not proxy or not host or bypass(host, proxies):
        return None, None
    if "://" not in proxy:
        proxy = "http://" + proxy
    parsed = URL(proxy)
    if parsed.scheme not in ("http", "https"):
        logger.warning("ignoring the %s proxy from the environment: only http(s) proxies "
                       "are supported", parsed.scheme)
        return None, None
    return str(parsed.with_user(None)), aiohttp.BasicAuth.from_url(parsed)


# -- server-sent events -----------------------------------------------------------------


class SSEParser:
    """Incremental ``text/event-stream`` parser: feed bytes, get each complete event's data.

    Lines end in LF, CRLF or CR (never in other Unicode separators, which may
    sit inside JSON strings); lines starting with ``:`` are comments; ``data:``
    comes with or without a space; several data lines join with LF; a blank
    line ends an event; fields other than ``data`` are ignored.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        buffer = self._buffer + chunk
        held_cr = buffer.endswith(b"\r")  # perhaps the first half of a CRLF
        if held_cr:
            buffer = buffer[:-1]
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._buffer = lines.pop() + (b"\r" if held_cr else b"")
        events = (self._line(line.decode("utf-8", "replace")) for line in lines)
        return [event for event in events if event is not None]

    def flush(self) -> list[str]:
        """At the end of the stream: an event left without its blank line, leniently."""
        events = self.feed(b"\n") if self._buffer else []
        return events + [event for event in [self._line("")] if event is not None]

    def _line(self, line: str) -> str | None:
        if not line:
            data, self._data = self._data, []
            return "\n".join(data) if data else None
        if not line.startswith(":"):
            name, _, value = line.partition(":")
            if name == "data":
                self._data.append(value[1:] if value.startswith(" ") else value)
        return None


class EventReader:
    """The data of each event in a streamed response, one at a time."""

    def __init__(self, response: aiohttp.ClientResponse):
        # Whatever bytes have arrived, not aiohttp's readline(): lines are split by
        # SSEParser alone, with no line-length limit.
        self._content = response.content
        self._parser = SSEParser()
        self._ready: deque[str] = deque()
        self._eof = False

    async def next(self) -> str | None:
        while not self._ready:
            if self._eof:
                return None
            chunk = await self._content.readany()
            if not chunk:
                self._eof = True
                self._ready.extend(self._parser.flush())
            else:
                self._ready.extend(self._parser.feed(chunk))
        return self._ready.popleft()

    async def drain(self, seconds: float) -> None:
        """Read what follows [DONE] (the closing chunk): a response read to its end hands
        its connection back to the pool instead of closing it."""
        with contextlib.suppress(TimeoutError, aiohttp.ClientError):
            async with asyncio.timeout(seconds):
                while await self._content.readany():
                    pass


@dataclass
class StreamState:
    started: bool = False  # response headers received
    tokens: int = 0
    finish_reasons: dict[int, str] = field(default_factory=dict)  # by choice
    choices: set[int] = field(default_factory=set)  # the choices seen
    usage: Usage | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # system_fingerprint, service_tier
    fields_sent: bool = False
    done: bool = False  # [DONE] seen
    finished: bool = False  # the last delta was handed over

    @property
    def finish_reason(self) -> str | None:
        return self.finish_reasons.get(0)

    @property
    def answered(self) -> bool:
        """Every choice seen has ended (the answer is whole)."""
        return bool(self.finish_reasons) and self.choices <= set(self.finish_reasons)


# -- errors -----------------------------------------------------------------------------


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP-date) or ``retry-after-ms``."""
    if milliseconds := headers.get("retry-after-ms"):
        with contextlib.suppress(ValueError):
            return max(0.0, float(milliseconds) / 1000)
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_details(body: bytes) -> tuple[str, str]:
    """(code, message) from an OpenAI-style error body, or from whatever the server sent."""
    try:
        payload = json.loads(body)
    except ValueError:
        return "", body.decode("utf-8", "replace")
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or json.dumps(error)
        return str(error.get("code") or error.get("type") or ""), str(message)
    return "", str(error)


def clean_message(text: str, secret: str) -> str:
    if secret:
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def error_from_response(name: str, status: int, headers: Mapping[str, str], body: bytes,
                        secret: str = "") -> EngineError:
    """The exception for an HTTP error answer; ``secret`` is scrubbed from the message."""
    code, message = _error_details(body)
    text = _("%(model)s: HTTP %(status)d: %(error)s") % {
        "model": name, "status": status, "error": clean_message(message, secret) or _("no message")}
    if status in (401, 403):
        return AuthFailed(text, status=status)
    if status == 429:
        return RateLimited(text, retry_after=retry_after_seconds(headers), status=status)
    if status in (400, 413, 422) and (
        code == "context_length_exceeded" or CONTEXT_MESSAGE.search(message)
    ):
        return ContextTooLong(text, status=status)
    if 400 <= status < 500:
        return BadRequest(text, status=status)
    return ServerError(text, status=status)


# -- the engine -------------------------------------------------------------------------


# -- answers ----------------------------------------------------------------------------

ANSWER_FIELDS = ("system_fingerprint", "service_tier")  # passed back as the backend sent them


def usage_of(raw: dict[str, Any]) -> Usage:
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))


def error_status(error: Any) -> int:
    """The HTTP status an in-stream error object stands for (500 unless it says)."""
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, int) and 400 <= code < 600:
        return code
    if isinstance(error, dict) and (error.get("code") == "context_length_exceeded"
                                    or CONTEXT_MESSAGE.search(str(error.get("message")))):
        return 400
    return 500


def answer_fields(payload: dict[str, Any]) -> dict[str, Any]:
    return {name: payload[name] for name in ANSWER_FIELDS if payload.get(name) is not None}


def tool_calls_of(raw: Any) -> list[dict[str, Any]] | None:
    return [c for c in raw if isinstance(c, dict)] or None if isinstance(raw, list) else None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def stream_piece(index: int, choice: dict[str, Any]) -> Delta:
    """One streamed choice's delta: its text, tool-call fragments, refusal, logprobs."""
    delta = _object(choice.get("delta"))
    content, refusal = delta.get("content"), delta.get("refusal")
    logprobs = choice.get("logprobs")
    return Delta(text=content if isinstance(content, str) else "", index=index,
                 tool_calls=tool_calls_of(delta.get("tool_calls")),
                 refusal=refusal if isinstance(refusal, str) and refusal else None,
                 logprobs=logprobs if isinstance(logprobs, dict)
                 and any(logprobs.values()) else None,
                 message_fields=message_fields_of(delta))


def whole_choice(raw: dict[str, Any]) -> Choice:
    """One whole choice of a non-streamed answer."""
    message = _object(raw.get("message"))
    content, refusal = message.get("content"), message.get("refusal")
    logprobs = raw.get("logprobs")
    return Choice(raw["index"] if isinstance(raw.get("index"), int) else 0,
                  content if isinstance(content, str) else None, raw.get("finish_reason"),
                  tool_calls_of(message.get("tool_calls")),
                  refusal if isinstance(refusal, str) else None,
                  logprobs if isinstance(logprobs, dict) else None,
                  message_fields_of(message))


def message_fields_of(message: dict[str, Any]) -> dict[str, Any] | None:
    """The message's fields besides content, calls and refusal (``MESSAGE_FIELDS``)."""
    return {name: message[name] for name in MESSAGE_FIELDS
            if message.get(name) not in (None, [], {})} or None
