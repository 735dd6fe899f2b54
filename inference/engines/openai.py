"""The ``openai`` engine: any server that speaks OpenAI's chat-completions
protocol (cloud APIs, trtllm-serve, vLLM, llama.cpp's server, Ollama).

Every endpoint in a process shares one pooled ``aiohttp.ClientSession`` per
event loop. ``stream()`` reads the server-sent events as they arrive, one
:class:`Delta` per content chunk, in a task of its own so that ``cancel()``
can close the HTTP connection; ``generate()`` makes one non-streaming call.
Timeouts (connect, first byte, total), HTTP errors and dropped connections
are raised as :mod:`inference.errors` exceptions so routing can retry or fall
back; the API key never appears in them.

Why aiohttp rather than httpx: against the loopback server on a 2-core machine
(``bench/http_clients.py``) httpx managed 1574 req/s at concurrency 1 (p50
0.60 ms) and 1052 req/s at concurrency 16 with a p99 of 80 ms (its connection
pool under contention, encode/httpx#3215); aiohttp 3979 req/s (p50 0.23 ms) and
11443 req/s at 16 (p99 1.7 ms), and a streamed first token in 0.22 ms instead of
0.68 ms. The gateway's budget is 2 ms of overhead at p50 and 570 req/s at 16.
What httpx did by default is kept: no redirects followed, certifi's CA bundle
(or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``), and the ``HTTP(S)_PROXY`` /
``ALL_PROXY`` / ``NO_PROXY`` environment read once per endpoint.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from django.utils.translation import gettext as _

from ..errors import (
    ConnectionFailed,
    EngineError,
    EngineTimeout,
    ServerError,
)
from ..registry import register_engine
from .base import (
    ALL_FIELDS,
    ChatRequest,
    Choice,
    Completion,
    Delta,
    EmbeddingResult,
    EndpointConfig,
    Engine,
    Usage,
)
from .openai_http import (
    MAX_ERROR_BODY,
    EventReader,
    SSEParser,
    StreamState,
    aclose_clients,
    answer_fields,
    clean_message,
    endpoint_urls,
    env_proxy,
    error_from_response,
    error_status,
    retry_after_seconds,
    shared_client,
    stream_piece,
    usage_of,
    whole_choice,
)

logger = logging.getLogger(__name__)

__all__ = ["CANCELLED", "OpenAIEngine", "SSEParser", "aclose_clients", "endpoint_urls",
           "retry_after_seconds", "shared_client"]

CANCELLED = "cancelled"  # finish_reason of a stream or completion stopped by cancel()
DRAIN_TIMEOUT = 1.0  # seconds to wait for the end of a response after [DONE]
_END = object()
_STOPPED = object()

@dataclass
class EndpointHealth:
    """What :meth:`OpenAIEngine.check` learnt about the server."""

    ok: bool
    latency_s: float
    models: list[str] = field(default_factory=list)
    error: str = ""
    code: str = ""  # the EngineError code when not ok


@register_engine("openai", "vllm")
class OpenAIEngine(Engine):
    """Talks to an OpenAI-compatible server over HTTP; every request field is passed on,
    every answer field passed back (tool calls, refusals, logprobs, ``n`` choices)."""

    honours = ALL_FIELDS

    def __init__(self, config: EndpointConfig):
        super().__init__(config)
        self.chat_url, self.models_url = endpoint_urls(config.url)
        proxy, proxy_auth = env_proxy(self.chat_url)
        # Only connecting is left to aiohttp (sock_connect: the TCP and TLS handshake, not
        # a wait for a free pooled connection); the first-byte and total deadlines are ours.
        # Redirects are not followed, as with httpx: a 3xx is an error.
        self._options: dict[str, Any] = {
            "timeout": aiohttp.ClientTimeout(sock_connect=config.connect_timeout),
            "allow_redirects": False, "proxy": proxy, "proxy_auth": proxy_auth}
        self._running: dict[str, set[asyncio.Task[Any]]] = {}

    # -- the interface

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        """Deltas as they arrive; after ``cancel()`` a last delta has finish_reason "cancelled"."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        task = asyncio.create_task(self._pump(request, queue))
        self._track(request.request_id, task)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if item is _STOPPED:
                    yield Delta(finish_reason=CANCELLED)
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._untrack(request.request_id, task)
            if not task.done():
                task.cancel()  # the caller stopped reading: close the connection
                await asyncio.wait([task])

    async def generate(self, request: ChatRequest) -> Completion:
        """One non-streaming call; after ``cancel()`` the finish_reason is "cancelled"."""
        if not request.request_id:
            return await self._complete(request)
        task = asyncio.create_task(self._complete(request))
        self._track(request.request_id, task)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                return Completion("", CANCELLED, Usage())
            raise
        finally:
            self._untrack(request.request_id, task)

    async def cancel(self, request_id: str) -> None:
        """Stop the calls running for ``request_id``; their connections are closed."""
        tasks = list(self._running.get(request_id, ()))
        loop = asyncio.get_running_loop()
        for task in tasks:
            if task.get_loop() is loop:
                task.cancel()
            else:
                task.get_loop().call_soon_threadsafe(task.cancel)
        local = [task for task in tasks if task.get_loop() is loop]
        if local:
            await asyncio.wait(local, timeout=5)
        logger.debug("%s: cancelled %d call(s) for %s", self.config.name, len(tasks), request_id)

    async def aclose(self) -> None:
        """Cancel this engine's calls; the shared pool stays (see :func:`aclose_clients`)."""
        for request_id in list(self._running):
            await self.cancel(request_id)

    async def list_models(self) -> list[str]:
        """The model ids the server lists at ``…/v1/models``."""
        payload = await self._call_json("GET", self.models_url, None,
                                        self.config.first_byte_timeout, "first_byte")
        data = payload.get("data") or []
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]

    async def _call_json(self, method: str, url: str, body: bytes | None, timeout: float,
                         phase: str) -> dict:
        """One whole (not streamed) request; the decoded JSON answer or an EngineError."""
        headers = self._headers()
        if body is not None:
            headers = {**headers, "Content-Type": "application/json"}
        session = await shared_client()
        try:
            async with asyncio.timeout(timeout):
                response = await session.request(method, url, data=body, headers=headers,
                                                 **self._options)
                try:
                    raw = await response.read()
                finally:
                    response.release()
        except aiohttp.ClientError as exc:  # first: aiohttp's timeouts are TimeoutErrors too
            raise self._transport_error(exc, None) from exc
        except TimeoutError:
            raise self._timeout(phase) from None
        if not _is_success(response.status):
            raise self._http_error(response, raw)
        return self._json(raw)

    async def check(self) -> EndpointHealth:
        """Whether the server answers ``…/v1/models``, how fast, and what it lists."""
        started = time.monotonic()
        try:
            models = await self.list_models()
        except EngineError as exc:
            return EndpointHealth(False, time.monotonic() - started, error=exc.message,
                                  code=exc.code)
        return EndpointHealth(True, time.monotonic() - started, models)

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        """Vectors from the server's ``…/v1/embeddings`` (next to its models URL)."""
        url = self.models_url.removesuffix("/models") + "/embeddings"
        body = _encode_json({"model": self.config.model_id, "input": texts,
                             "encoding_format": "float"})
        payload = await self._call_json("POST", url, body, self.config.total_timeout, "total")
        data = payload.get("data")
        if not isinstance(data, list) or len(data) != len(texts):
            raise ServerError(_("%(model)s: expected %(count)d embeddings")
                              % {"model": self.config.name, "count": len(texts)})
        try:
            rows = sorted(data, key=lambda row: row.get("index", 0))
            vectors = [[float(v) for v in row["embedding"]] for row in rows]
        except (AttributeError, KeyError, TypeError, ValueError):
            raise ServerError(_("%(model)s: malformed embeddings answer")
                              % {"model": self.config.name}) from None
        usage = payload.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        return EmbeddingResult(vectors, int(usage.get("prompt_tokens") or 0))

    # -- building the request

    def _headers(self, request_id: str = "", *, stream: bool = False) -> dict[str, str]:
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        if request_id:
            headers["X-Request-Id"] = request_id
        return headers

    def _body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        """Config defaults, under the request's extra fields, under its named fields."""
        named = {"max_tokens": request.max_tokens, "temperature": request.temperature,
                 "top_p": request.top_p, "stop": request.stop, "seed": request.seed}
        body: dict[str, Any] = {**self.config.params, **request.extra}
        body.update({key: value for key, value in named.items() if value is not None})
        if "max_tokens" not in body and "max_completion_tokens" not in body:
            body["max_tokens"] = self.config.max_output_tokens
        body.update(model=self.config.model_id, messages=request.messages, stream=stream)
        if stream:
            body["stream_options"] = {**(body.get("stream_options") or {}),
                                      "include_usage": True}
        else:
            body.pop("stream_options", None)  # OpenAI refuses it on non-streaming calls
        return body

    async def _send(self, body: dict[str, Any], request_id: str, *,
                    stream: bool) -> aiohttp.ClientResponse:
        """POST to the chat URL; the open response, or the mapped error for a non-2xx."""
        session = await shared_client()
        headers = self._headers(request_id, stream=stream)
        headers["Content-Type"] = "application/json"
        response = await session.post(self.chat_url, data=_encode_json(body), headers=headers,
                                      **self._options)
        if _is_success(response.status):
            return response
        try:
            raw = b""
            while len(raw) <= MAX_ERROR_BODY and (chunk := await response.content.readany()):
                raw += chunk
        finally:
            response.release()  # closes the connection unless the body was read to its end
        raise self._http_error(response, raw)

    # -- streaming

    async def _pump(self, request: ChatRequest, queue: asyncio.Queue[Any]) -> None:
        """Run the streaming call, handing deltas, then the end or an error, to ``queue``."""
        try:
            await self._produce(request, queue.put_nowait)
        except asyncio.CancelledError:
            queue.put_nowait(_STOPPED)
            raise
        except Exception as exc:  # handed to the reader, who raises it
            queue.put_nowait(exc)
        else:
            queue.put_nowait(_END)

    async def _produce(self, request: ChatRequest, emit: Callable[[Delta], None]) -> None:
        state = StreamState()
        try:
            async with asyncio.timeout(self.config.total_timeout):
                await self._read_stream(request, state, emit)
        except aiohttp.ClientError as exc:  # first: aiohttp's timeouts are TimeoutErrors too
            if not state.answered:
                raise self._transport_error(exc, state) from exc
            logger.debug("%s: connection lost after the answer ended: %r", self.config.name, exc)
            self._finish(state, emit)
        except TimeoutError:
            if not state.finished:  # else it ran out while tidying up after the answer
                raise self._timeout("total", state) from None

    async def _read_stream(self, request: ChatRequest, state: StreamState,
                           emit: Callable[[Delta], None]) -> None:
        """Events until [DONE] or the end; the first must come within the first-byte timeout."""
        response = None
        try:
            try:
                async with asyncio.timeout(self.config.first_byte_timeout):
                    body = self._body(request, stream=True)
                    response = await self._send(body, request.request_id, stream=True)
                    state.started = True
                    events = EventReader(response)
                    data = await events.next()
            except aiohttp.ServerTimeoutError:
                raise  # aiohttp's own (connecting): mapped with its other errors
            except TimeoutError:
                raise self._timeout("first_byte", state) from None
            while data is not None and not self._on_event(data, state, emit):
                data = await events.next()
            self._finish(state, emit)
            if state.done:
                await events.drain(DRAIN_TIMEOUT)
        finally:
            if response is not None:
                if response.content.at_eof():
                    response.release()  # read to its end: the connection goes back to the pool
                else:
                    response.close()  # cancelled, failed or not drained: close the connection

    def _finish(self, state: StreamState, emit: Callable[[Delta], None]) -> None:
        if not state.done and not state.answered:
            raise ConnectionFailed(_("%(model)s: stream ended after %(tokens)d tokens without "
                                     "a finish_reason or [DONE]")
                                   % {"model": self.config.name, "tokens": state.tokens})
        state.finished = True
        indexes = sorted(state.choices) or [0]
        for index in indexes:  # the usage rides on the last
            emit(Delta(index=index, finish_reason=state.finish_reasons.get(index) or "stop",
                       usage=state.usage if index == indexes[-1] else None,
                       fields=self._fields_once(state)))

    def _on_event(self, data: str, state: StreamState, emit: Callable[[Delta], None]) -> bool:
        """Take one event's data into ``state``; True at [DONE]."""
        if data.strip() == "[DONE]":
            state.done = True
            return True
        chunk = self._json(data.encode())
        if chunk.get("error"):  # some servers report a failure mid-stream this way
            raise self._error(error_status(chunk["error"]), {}, data.encode())
        if isinstance(chunk.get("usage"), dict):
            state.usage = usage_of(chunk["usage"])
        state.fields.update(answer_fields(chunk))
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            index = choice["index"] if isinstance(choice.get("index"), int) else 0
            state.choices.add(index)
            piece = stream_piece(index, choice)
            if piece.speaks or piece.logprobs:
                state.tokens += 1
                piece.tokens = 1 if piece.text else 0
                piece.fields = self._fields_once(state)
                emit(piece)
            if choice.get("finish_reason"):
                state.finish_reasons[index] = str(choice["finish_reason"])
        return False

    @staticmethod
    def _fields_once(state: StreamState) -> dict[str, Any] | None:
        """The answer-level fields, on the first delta handed over."""
        if state.fields_sent:
            return None
        state.fields_sent = True
        return dict(state.fields) or None

    # -- non-streaming

    async def _complete(self, request: ChatRequest) -> Completion:
        body = self._body(request, stream=False)
        try:
            async with asyncio.timeout(self.config.total_timeout):
                raw = await self._post(body, request.request_id)
        except aiohttp.ClientError as exc:  # first: aiohttp's timeouts are TimeoutErrors too
            raise self._transport_error(exc, None) from exc
        except TimeoutError:
            raise self._timeout("total") from None
        payload = self._json(raw)
        usage = payload.get("usage")
        choices = sorted((whole_choice(c) for c in payload.get("choices") or []
                          if isinstance(c, dict)), key=lambda c: c.index) or [Choice()]
        first = choices[0]
        return Completion(first.text or "", first.finish_reason,
                          usage_of(usage) if isinstance(usage, dict) else Usage(),
                          first.tool_calls, first.refusal, first.logprobs, choices[1:],
                          answer_fields(payload), first.message_fields)

    async def _post(self, body: dict[str, Any], request_id: str) -> bytes:
        try:
            async with asyncio.timeout(self.config.first_byte_timeout):
                response = await self._send(body, request_id, stream=False)
        except aiohttp.ServerTimeoutError:
            raise  # aiohttp's own (connecting): mapped with its other errors
        except TimeoutError:
            raise self._timeout("first_byte") from None
        try:
            return await response.read()
        finally:
            response.release()

    # -- helpers

    def _json(self, raw: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            snippet = clean_message(raw.decode("utf-8", "replace"), self.config.api_key)
            raise ServerError(_("%(model)s: not a JSON object: %(answer)s")
                              % {"model": self.config.name, "answer": repr(snippet)})
        return payload

    def _http_error(self, response: aiohttp.ClientResponse, body: bytes) -> EngineError:
        return self._error(response.status, response.headers, body)

    def _error(self, status: int, headers: Mapping[str, str], body: bytes) -> EngineError:
        error = error_from_response(self.config.name, status, headers, body,
                                    self.config.api_key)
        logger.debug("%s: %s", self.config.name, error.message)
        return error

    def _timeout(self, phase: str, state: StreamState | None = None) -> EngineTimeout:
        limit = {"connect": self.config.connect_timeout,
                 "first_byte": self.config.first_byte_timeout,
                 "total": self.config.total_timeout}[phase]
        tokens = state.tokens if state else 0
        if phase == "connect":
            message = _("%(model)s: no connection within %(seconds)g s")
        elif phase == "first_byte" and tokens:
            message = _("%(model)s: no first byte within %(seconds)g s (%(tokens)d tokens "
                        "received)")
        elif phase == "first_byte":
            message = _("%(model)s: no first byte within %(seconds)g s")
        elif tokens:
            message = _("%(model)s: answer not finished within %(seconds)g s (%(tokens)d "
                        "tokens received)")
        else:
            message = _("%(model)s: answer not finished within %(seconds)g s")
        return EngineTimeout(message % {"model": self.config.name, "seconds": limit,
                                        "tokens": tokens}, phase=phase)

    def _transport_error(self, exc: Exception, state: StreamState | None) -> EngineError:
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return self._timeout("connect")
        if isinstance(exc, aiohttp.ServerTimeoutError):  # sock_read: not set, kept safe
            return self._timeout("first_byte", state)
        detail = clean_message(f"{type(exc).__name__}: {exc}", self.config.api_key)
        if state is not None and state.started:
            message = _("%(model)s: connection dropped after %(tokens)d tokens: %(error)s")
        else:
            message = _("%(model)s: connection to %(url)s failed: %(error)s")
        return ConnectionFailed(message % {"model": self.config.name, "url": self.chat_url,
                                           "tokens": state.tokens if state else 0,
                                           "error": detail})

    def _track(self, request_id: str, task: asyncio.Task[Any]) -> None:
        if request_id:
            self._running.setdefault(request_id, set()).add(task)

    def _untrack(self, request_id: str, task: asyncio.Task[Any]) -> None:
        tasks = self._running.get(request_id)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._running[request_id]


def _is_success(status: int) -> bool:
    return 200 <= status < 300


def _encode_json(body: dict[str, Any]) -> bytes:
    # As httpx encoded ``json=``: compact, UTF-8, and NaN or infinity refused (ValueError).
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode()
