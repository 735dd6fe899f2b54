"""A real OpenAI-compatible HTTP/1.1 server on loopback, for tests and benchmarks.

Built on asyncio streams with a hand-written minimal HTTP/1.1 parser
(keep-alive, Content-Length or chunked request bodies), so it is fast and can
misbehave on purpose. Endpoints:

* ``GET /v1/models`` and ``GET /health``
* ``POST /v1/chat/completions``: JSON, or SSE (``data: {chunk}`` ...
  ``data: [DONE]``) framed with chunked transfer-encoding (or by closing the
  connection); chunks are OpenAI ``chat.completion.chunk`` objects, with a
  usage chunk when ``stream_options.include_usage`` is true.
* ``POST /v1/embeddings``: small deterministic vectors from a hash of the input.

The answer is ``echo: <words of the last user message>``, one token per word
(one SSE chunk per token); usage counts words.

Behaviours are chosen per request by the model name, so tests configure
nothing global. Parts joined with ``+`` combine (``slow-20+tokens-5``); parts
that are not scenarios are ignored (use them as tags):

=====================  ==========================================================
``slow-<ms>``          sleep before each token
``slowstart-<ms>``     sleep before the response headers
``error-<status>``     answer ``status`` with an OpenAI error body
``ratelimit-<s>``      429 with ``Retry-After: <s>``
``ratelimitdate-<s>``  429 with ``Retry-After`` as an HTTP-date ``s`` seconds ahead
``context-<n>``        400 ``context_length_exceeded`` if the prompt has more than n words
``drop-after-<n>``     send n tokens, then close the socket (no ``[DONE]``)
``auth``               require ``Authorization: Bearer good-key`` (else 401)
``tokens-<n>``         answer exactly n tokens
``flaky-<percent>``    fail with 500 that share of calls (deterministic, per model)
``close``              frame the stream by closing the connection, not chunked
``messy``              SSE with comments, ``data:`` without a space, multi-line
                       data, CRLF line ends, extra fields and a null content
``refuse``             a refusal (``message.refusal``, streamed as ``delta.refusal``)
=====================  ==========================================================

The rest of the chat wire format is answered as OpenAI answers it: with ``tools``
(and ``tool_choice`` not ``none``) and a user message last, the model calls the tools
whose names the message mentions (else the first; the one ``tool_choice`` names; one
only when ``parallel_tool_calls`` is false), arguments made from each tool's JSON
schema and the message's words, ``finish_reason: "tool_calls"``, streamed as OpenAI
streams the fragments; after ``tool`` messages it answers ``echo: tool results: …``.
``n`` gives that many choices, ``logprobs`` / ``top_logprobs`` per-token logprobs,
``response_format`` JSON (a value made from the ``json_schema``, or an object),
``modalities: ["text", "audio"]`` an ``audio`` object (its transcript the text; streamed
in two pieces).

Every request is recorded in :attr:`OpenAIServer.requests` (with, for streams,
the monotonic time each event was written)::

    with OpenAIServer() as server:
        httpx.post(server.url + "/chat/completions", json={...})
        server.requests[-1].body

Standalone, for benchmarks: ``python -m tests.openai_server --port 8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import math
import random
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

GOOD_KEY = "good-key"
MODELS = ["echo", "echo-large", "embed-small"]
EMBEDDING_DIMENSIONS = 8
_SCENARIO_PART = re.compile(r"^([a-z]+(?:-[a-z]+)*)-(\d+)$")
_NUMERIC_SCENARIOS = {
    "slow": "slow_ms",
    "slowstart": "slowstart_ms",
    "error": "error",
    "ratelimit": "ratelimit",
    "ratelimitdate": "ratelimit_date",
    "context": "context",
    "drop-after": "drop_after",
    "tokens": "tokens",
    "flaky": "flaky",
}
_FLAG_SCENARIOS = {"auth", "close", "messy", "refuse"}
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_ERROR_TYPES = {401: "invalid_request_error", 403: "permission_error", 429: "requests"}


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None
    connection: int  # which TCP connection carried it (keep-alive shows as a repeat)
    received_at: float  # time.monotonic()
    chunk_times: list[float] = field(default_factory=list)  # each SSE event written
    client_closed: bool = False  # the client went away before the answer was complete

    @property
    def model(self) -> str:
        return str(self.body.get("model", "")) if isinstance(self.body, dict) else ""


@dataclass
class Scenario:
    """The behaviours a model name asks for."""

    slow_ms: int = 0
    slowstart_ms: int = 0
    error: int | None = None
    ratelimit: int | None = None
    ratelimit_date: int | None = None
    context: int | None = None
    drop_after: int | None = None
    tokens: int | None = None
    flaky: int = 0
    auth: bool = False
    close: bool = False
    messy: bool = False
    refuse: bool = False

    @classmethod
    def parse(cls, model: str) -> Scenario:
        scenario = cls()
        for part in model.split("+"):
            part = part.strip().lower()
            if part in _FLAG_SCENARIOS:
                setattr(scenario, part, True)
            elif (match := _SCENARIO_PART.match(part)) and match[1] in _NUMERIC_SCENARIOS:
                setattr(scenario, _NUMERIC_SCENARIOS[match[1]], int(match[2]))
        return scenario


@dataclass
class _HTTPRequest:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


class _Malformed(Exception):
    """The bytes on the wire are not an HTTP/1.1 request we understand."""


# -- HTTP/1.1 reading and writing ---------------------------------------------------------


async def _read_request(reader: asyncio.StreamReader) -> _HTTPRequest | None:
    """The next request on the connection, or None when the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError as exc:
        raise _Malformed("request head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise _Malformed(f"bad request line {lines[0]!r}") from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await _read_body(reader, headers)
    return _HTTPRequest(method, target.split("?", 1)[0], version, headers, body)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await reader.readexactly(size + 2))
        await reader.readuntil(b"\r\n")  # no trailers expected
        return b"".join(part[:-2] for part in parts)
    length = int(headers.get("content-length") or 0)
    return await reader.readexactly(length) if length else b""


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _json_response(status: int, payload: Any, keep_alive: bool,
                   headers: dict[str, str] | None = None) -> bytes:
    body = json.dumps(payload).encode()
    all_headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    all_headers.update(headers or {})
    if not keep_alive:
        all_headers["Connection"] = "close"
    return _head(status, all_headers) + body


def _error_payload(message: str, type_: str, code: str | None = None,
                   param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# -- answers ---------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    """Text of a message's content: a string, or a list of OpenAI content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def prompt_words(body: dict[str, Any]) -> int:
    messages = body.get("messages") or []
    return sum(len(_text_of(m.get("content")).split()) for m in messages if isinstance(m, dict))


def answer_tokens(body: dict[str, Any], scenario: Scenario) -> tuple[list[str], str]:
    """The answer's tokens (they join into the text) and its finish_reason."""
    users = [m for m in body.get("messages") or [] if isinstance(m, dict)
             and m.get("role") == "user"]
    words = ["echo:"] + (_text_of(users[-1].get("content")).split() if users else [])
    count = scenario.tokens if scenario.tokens is not None else len(words)
    picked = [words[i % len(words)] for i in range(count)]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    finish = "stop"
    if isinstance(limit, int) and limit < count:
        picked, finish = picked[:limit], "length"
    return [word if i == 0 else " " + word for i, word in enumerate(picked)], finish


REFUSAL = "I can't help with that request."
JSON_PIECE = 8  # characters of a JSON answer per streamed token
ARGUMENTS_PIECE = 7  # characters of a tool call's arguments per streamed fragment


@dataclass
class Answer:
    """What each choice of an answer says: content tokens, or tool calls, or a refusal."""

    tokens: list[str]
    finish: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    refusal: str | None = None


def plan_answer(body: dict[str, Any], scenario: Scenario,
                call_ids: itertools.count) -> Answer:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    last = messages[-1] if messages else {}
    if scenario.refuse:
        return Answer([], "stop", refusal=REFUSAL)
    tools = [t["function"] for t in body.get("tools") or []
             if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    choice = body.get("tool_choice", "auto")
    if tools and choice != "none" and last.get("role") == "user":
        calls = _calls(tools, choice, body.get("parallel_tool_calls", True),
                       _text_of(last.get("content")), call_ids)
        return Answer([], "tool_calls", calls=calls)
    if last.get("role") == "tool":
        results = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            results.insert(0, _text_of(message.get("content")))
        words = ["echo:", "tool", "results:", *" ".join(results).split()]
        return Answer([w if i == 0 else " " + w for i, w in enumerate(words)], "stop")
    form = body.get("response_format") if isinstance(body.get("response_format"), dict) else {}
    if form.get("type") in ("json_object", "json_schema"):
        text = _text_of(last.get("content"))
        schema = (form.get("json_schema") or {}).get("schema")
        value = _value(schema, schema, text.split() or ["nothing"]) if schema else {"echo": text}
        content = json.dumps(value)
        return Answer([content[i:i + JSON_PIECE] for i in range(0, len(content), JSON_PIECE)],
                      "stop")
    tokens, finish = answer_tokens(body, scenario)
    return Answer(tokens, finish)


def _calls(tools: list[dict[str, Any]], choice: Any, parallel: Any, text: str,
           call_ids: itertools.count) -> list[dict[str, Any]]:
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        picked = [t for t in tools if t.get("name") == wanted]
    else:
        picked = [t for t in tools if t.get("name") and t["name"] in text] or tools[:1]
    if parallel is False:
        picked = picked[:1]
    words = [w.strip(".,!?;:") for w in text.split()] or ["nothing"]
    return [{"id": f"call_{next(call_ids)}", "type": "function",
             "function": {"name": t["name"], "arguments": json.dumps(
                 _value(t.get("parameters") or {"type": "object"},
                        t.get("parameters") or {}, words))}}
            for t in picked]


def _value(schema: Any, root: Any, words: list[str]) -> Any:
    """A value that fits ``schema`` (a JSON schema), made from ``words``."""
    if not isinstance(schema, dict):
        return words[-1]
    if isinstance(schema.get("$ref"), str):
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _value(((root or {}).get("$defs") or {}).get(name, {}), root, words)
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _value(schema[key][0], root, words)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        return {name: _value(sub, root, words)
                for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_value(schema.get("items") or {"type": "string"}, root, words)]
    if kind == "integer":
        return len(words)
    if kind == "number":
        return float(len(words))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return words[-1]


def logprobs_of(tokens: list[str], top: int) -> dict[str, Any]:
    """OpenAI's ``logprobs`` of a choice: one entry per token, ``top`` alternatives each."""
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {"content": [{**entry(token, -0.25),
                         "top_logprobs": [entry(token if k == 0 else token.upper(),
                                                -0.25 - k) for k in range(top)]}
                        for token in tokens],
            "refusal": None}


def answer_usage(body: dict[str, Any], answer: Answer, choices: int) -> dict[str, int]:
    completion = len(answer.tokens) + sum(len(c["function"]["arguments"]) // 4 + 1
                                          for c in answer.calls)
    if answer.refusal:
        completion = len(answer.refusal.split())
    return _usage(prompt_words(body), completion * choices)


def wants_audio(body: dict[str, Any]) -> bool:
    modalities = body.get("modalities")
    return isinstance(modalities, list) and "audio" in modalities


def audio_of(transcript: str) -> dict[str, Any]:
    """The ``audio`` of an answer asked for with ``modalities: ["text", "audio"]``: the
    transcript, and its bytes as base64 "audio" data."""
    return {"id": "audio_openclaw_tests", "expires_at": 1_900_000_000,
            "data": base64.b64encode(transcript.encode()).decode(), "transcript": transcript}


def embedding(text: str, dimensions: int) -> list[float]:
    """A unit vector that depends only on ``text``."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    vector = [rng.uniform(-1.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 6) for v in vector]


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


# -- the server ------------------------------------------------------------------------


class OpenAIServer:
    """The loopback server; ``start()`` runs it in a thread with its own event loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, require_key: bool = False):
        self.host = host
        self.port = port
        self.require_key = require_key  # every endpoint wants the good key, not just `auth`
        self.requests: list[RecordedRequest] = []
        self._calls: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._call_ids = itertools.count(1)
        self._connections = itertools.count(1)
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/v1"

    def reset(self) -> None:
        """Forget recorded requests and flaky counters."""
        self.requests.clear()
        self._calls.clear()

    def requests_for(self, model: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.model == model]

    # -- lifecycle

    def start(self) -> OpenAIServer:
        if self._thread is not None:
            return self
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True,
                                        name=f"openai-server-{self.port}")
        self._thread.start()
        ready.wait(10)
        if self._error is not None or self._server is None:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError(f"openai test server did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        with contextlib.suppress(Exception):
            future.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def serve_forever(self) -> None:
        """Serve on the running loop until cancelled (the standalone mode)."""
        server = await self._listen()
        async with server:
            await server.serve_forever()

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(self._listen())
        except BaseException as exc:  # reported by start()
            self._error = exc
        ready.set()
        if self._server is not None:
            loop.run_forever()
        loop.close()

    async def _listen(self) -> asyncio.Server:
        server = await asyncio.start_server(self._handle, self.host, self.port,
                                            limit=1 << 20, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        self._server = server
        return server

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    # -- connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        connection = next(self._connections)
        try:
            while (request := await _read_request(reader)) is not None:
                if not await self._dispatch(request, connection, reader, writer):
                    break
        except _Malformed as exc:
            writer.write(_json_response(400, _error_payload(str(exc), "invalid_request_error"),
                                        keep_alive=False))
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the client went away, or sent something we cannot read
        except asyncio.CancelledError:
            pass  # stop(): end quietly (3.11's start_server callback chokes on a cancelled task)
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _dispatch(self, request: _HTTPRequest, connection: int,
                        reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must close afterwards."""
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = None
            if request.method == "POST":
                writer.write(_json_response(400, _error_payload(
                    "We could not parse the JSON body of your request.",
                    "invalid_request_error"), request.keep_alive))
                return request.keep_alive
        record = RecordedRequest(request.method, request.path, dict(request.headers), body,
                                 connection, time.monotonic())
        self.requests.append(record)
        route = (request.method, request.path.rstrip("/"))
        if route == ("POST", "/v1/chat/completions"):
            return await self._chat(record, request.keep_alive, reader, writer)
        if route == ("POST", "/v1/embeddings"):
            return await self._embeddings(record, request.keep_alive, writer)
        writer.write(self._simple_route(route, record, request.keep_alive))
        return request.keep_alive

    def _simple_route(self, route: tuple[str, str], record: RecordedRequest,
                      keep_alive: bool) -> bytes:
        if route == ("GET", "/v1/models"):
            refusal = self._auth_refusal(record, Scenario())
            if refusal:
                status, payload, headers = refusal
                return _json_response(status, payload, keep_alive, headers)
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "openclaw-tests"}
                    for m in MODELS]
            return _json_response(200, {"object": "list", "data": data}, keep_alive)
        if route in (("GET", "/health"), ("GET", "/v1/health")):
            return _json_response(200, {"status": "ok"}, keep_alive)
        message = f"Unknown request URL: {route[0]} {route[1]}."
        return _json_response(404, _error_payload(message, "invalid_request_error",
                                                  "unknown_url"), keep_alive)

    # -- refusals (errors chosen by the scenario)

    def _auth_refusal(self, record: RecordedRequest,
                      scenario: Scenario) -> tuple[int, Any, dict[str, str]] | None:
        if not (scenario.auth or self.require_key):
            return None
        given = record.headers.get("authorization", "")
        if given == f"Bearer {GOOD_KEY}":
            return None
        key = given.removeprefix("Bearer ").strip()
        # Like OpenAI, echo the key back: clients must not pass it on in their errors.
        message = f"Incorrect API key provided: {key}." if key else "You didn't provide an API key."
        return 401, _error_payload(message, "invalid_request_error", "invalid_api_key"), {}

    def _refusal(self, record: RecordedRequest,
                 scenario: Scenario) -> tuple[int, Any, dict[str, str]] | None:
        """The error this request must get, if any: (status, payload, headers)."""
        if refusal := self._auth_refusal(record, scenario):
            return refusal
        limited = "Rate limit reached for requests. Please try again later."
        if scenario.ratelimit is not None:
            return 429, _error_payload(limited, "requests", "rate_limit_exceeded"), {
                "Retry-After": str(scenario.ratelimit)}
        if scenario.ratelimit_date is not None:
            when = formatdate(time.time() + scenario.ratelimit_date, usegmt=True)
            return 429, _error_payload(limited, "requests", "rate_limit_exceeded"), {
                "Retry-After": when}
        if scenario.flaky and self._flaky_fails(record.model, scenario.flaky):
            return 500, _error_payload("The server had an error (flaky).", "server_error"), {}
        if scenario.error is not None:
            return self._status_refusal(scenario.error)
        return self._context_refusal(record, scenario)

    def _flaky_fails(self, model: str, percent: int) -> bool:
        calls = self._calls[model] = self._calls.get(model, 0) + 1
        # Call k fails when the running share of failures, rounded up, grows: the
        # first call fails for any percent > 0 and the share converges exactly.
        return -(-calls * percent // 100) > -(-(calls - 1) * percent // 100)

    @staticmethod
    def _status_refusal(status: int) -> tuple[int, Any, dict[str, str]]:
        kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else
                                "invalid_request_error")
        message = f"Simulated error {status}."
        return status, _error_payload(message, kind, f"simulated_{status}"), {}

    @staticmethod
    def _context_refusal(record: RecordedRequest,
                         scenario: Scenario) -> tuple[int, Any, dict[str, str]] | None:
        if scenario.context is None or record.path.endswith("/embeddings"):
            return None
        words = prompt_words(record.body)
        if words <= scenario.context:
            return None
        message = (f"This model's maximum context length is {scenario.context} tokens. "
                   f"However, your messages resulted in {words} tokens.")
        return 400, _error_payload(message, "invalid_request_error",
                                   "context_length_exceeded", "messages"), {}

    # -- chat completions

    async def _chat(self, record: RecordedRequest, keep_alive: bool,
                    reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        body = record.body if isinstance(record.body, dict) else {}
        scenario = Scenario.parse(record.model)
        if scenario.slowstart_ms:
            await asyncio.sleep(scenario.slowstart_ms / 1000)
        if refusal := self._refusal(record, scenario):
            status, payload, headers = refusal
            writer.write(_json_response(status, payload, keep_alive, headers))
            return keep_alive
        answer = plan_answer(body, scenario, self._call_ids)
        choices = body["n"] if isinstance(body.get("n"), int) and body["n"] > 0 else 1
        if body.get("stream"):
            stream = _ChatStream(record, body, scenario, reader, writer, next(self._ids))
            return await stream.run(answer, choices, keep_alive)
        return await self._complete(record, body, scenario, answer, choices, writer, keep_alive)

    async def _complete(self, record: RecordedRequest, body: dict[str, Any], scenario: Scenario,
                        answer: Answer, choices: int, writer: asyncio.StreamWriter,
                        keep_alive: bool) -> bool:
        if scenario.slow_ms:
            await asyncio.sleep(scenario.slow_ms * len(answer.tokens) / 1000)
        if scenario.drop_after is not None:
            writer.transport.close()  # no answer at all
            return False
        message: dict[str, Any] = {
            "role": "assistant", "refusal": answer.refusal,
            "content": None if answer.calls or answer.refusal else "".join(answer.tokens)}
        if answer.calls:
            message["tool_calls"] = answer.calls
        if wants_audio(body):
            message["audio"] = audio_of("".join(answer.tokens))
        logprobs = logprobs_of(answer.tokens, body.get("top_logprobs") or 0) \
            if body.get("logprobs") else None
        payload = {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": record.model,
            "system_fingerprint": "fp_openclaw_tests",
            "service_tier": "default",
            "choices": [{"index": index, "message": message, "logprobs": logprobs,
                         "finish_reason": answer.finish} for index in range(choices)],
            "usage": answer_usage(body, answer, choices),
        }
        writer.write(_json_response(200, payload, keep_alive))
        return keep_alive

    # -- embeddings

    async def _embeddings(self, record: RecordedRequest, keep_alive: bool,
                          writer: asyncio.StreamWriter) -> bool:
        body = record.body if isinstance(record.body, dict) else {}
        scenario = Scenario.parse(record.model)
        if scenario.slowstart_ms:
            await asyncio.sleep(scenario.slowstart_ms / 1000)
        if refusal := self._refusal(record, scenario):
            status, payload, headers = refusal
            writer.write(_json_response(status, payload, keep_alive, headers))
            return keep_alive
        raw = body.get("input", "")
        inputs = [raw] if isinstance(raw, str) else list(raw)
        texts = [item if isinstance(item, str) else json.dumps(item) for item in inputs]
        dimensions = int(body.get("dimensions") or EMBEDDING_DIMENSIONS)
        data = [{"object": "embedding", "index": i, "embedding": embedding(text, dimensions)}
                for i, text in enumerate(texts)]
        words = sum(len(text.split()) for text in texts)
        payload = {"object": "list", "data": data, "model": record.model,
                   "usage": {"prompt_tokens": words, "total_tokens": words}}
        writer.write(_json_response(200, payload, keep_alive))
        return keep_alive


class _ChatStream:
    """Writes one streamed chat completion as server-sent events."""

    def __init__(self, record: RecordedRequest, body: dict[str, Any], scenario: Scenario,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int):
        self.record = record
        self.scenario = scenario
        self.reader = reader
        self.writer = writer
        self.chunked = not scenario.close
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.body = body
        self.top_logprobs = body.get("top_logprobs") or 0 if body.get("logprobs") else None
        self.base = {"id": f"chatcmpl-{number}", "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": record.model,
                     "system_fingerprint": "fp_openclaw_tests"}

    async def run(self, answer: Answer, choices: int, keep_alive: bool) -> bool:
        """Stream the answer; False when the connection must close afterwards."""
        headers = {"Content-Type": "text/event-stream; charset=utf-8",
                   "Cache-Control": "no-cache"}
        if self.chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Connection"] = "close"
        self.writer.write(_head(200, headers))
        for choice in range(choices):
            if not await self._send(self._chunk({"role": "assistant", "content": ""}, choice)):
                return False
        if self.scenario.messy:
            await self._send_raw(b": messy stream, comment line\r\n\r\n")
            await self._send(self._chunk({"content": None}))
        if not await self._pieces(answer, choices):
            return False
        if not await self._finish(answer, choices):
            return False
        if self.chunked:
            self.writer.write(b"0\r\n\r\n")
            return keep_alive
        self.writer.close()
        return False

    async def _pieces(self, answer: Answer, choices: int) -> bool:
        """The answer's refusal, tool-call fragments or content tokens, each choice;
        ``drop-after`` and ``slow`` count them all as tokens."""
        chunks: list[dict[str, Any]] = []
        for choice in range(choices):
            if answer.refusal:
                chunks += [self._chunk({"refusal": word + " "}, choice)
                           for word in answer.refusal.split(" ")]
            for number, call in enumerate(answer.calls):
                function, arguments = call["function"], call["function"]["arguments"]
                chunks.append(self._chunk({"tool_calls": [{
                    "index": number, "id": call["id"], "type": "function",
                    "function": {"name": function["name"], "arguments": ""}}]}, choice))
                chunks += [self._chunk({"tool_calls": [{"index": number, "function": {
                    "arguments": arguments[i:i + ARGUMENTS_PIECE]}}]}, choice)
                    for i in range(0, len(arguments), ARGUMENTS_PIECE)]
        for token in answer.tokens:
            logprobs = None if self.top_logprobs is None else logprobs_of([token],
                                                                          self.top_logprobs)
            chunks += [self._chunk({"content": token}, choice, logprobs=logprobs)
                       for choice in range(choices)]
        if wants_audio(self.body):  # the audio in two pieces, as OpenAI streams it
            audio = audio_of("".join(answer.tokens))
            half = len(audio["transcript"]) // 2
            chunks += [piece for choice in range(choices) for piece in (
                self._chunk({"audio": {"id": audio["id"],
                                       "transcript": audio["transcript"][:half]}}, choice),
                self._chunk({"audio": {"data": audio["data"], "expires_at": audio["expires_at"],
                                       "transcript": audio["transcript"][half:]}}, choice))]
        for number, chunk in enumerate(chunks):
            if not await self._token(number, chunk):
                return False
        return True

    async def _token(self, index: int, chunk: dict[str, Any]) -> bool:
        if self.scenario.drop_after is not None and index >= self.scenario.drop_after:
            await self.writer.drain()
            self.writer.transport.close()  # mid-stream, without the closing chunk
            return False
        if self.scenario.slow_ms:
            await asyncio.sleep(self.scenario.slow_ms / 1000)
        return await self._send(chunk)

    async def _finish(self, answer: Answer, choices: int) -> bool:
        for choice in range(choices):
            if not await self._send(self._chunk({}, choice, answer.finish)):
                return False
        if self.include_usage:
            usage_chunk = dict(self.base, choices=[],
                               usage=answer_usage(self.body, answer, choices))
            if not await self._send(usage_chunk):
                return False
        return await self._send_raw(b"data: [DONE]\n\n")

    def _chunk(self, delta: dict[str, Any], index: int = 0, finish: str | None = None,
               logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        chunk = dict(self.base, choices=[choice])
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    async def _send(self, chunk: dict[str, Any]) -> bool:
        if not self.scenario.messy:
            return await self._send_raw(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        text = json.dumps(chunk)
        head, _, tail = text.partition(", ")  # one JSON value over two data lines
        event = f"event: message\r\nid: {len(self.record.chunk_times)}\r\ndata:{head},\r\n"
        return await self._send_raw(f"{event}data: {tail}\r\n\r\n".encode())

    async def _send_raw(self, event: bytes) -> bool:
        """Write one event; False when the client has gone."""
        if self.reader.at_eof() or self.writer.transport.is_closing():
            self.record.client_closed = True
            return False
        self.record.chunk_times.append(time.monotonic())
        if self.chunked:
            event = f"{len(event):x}\r\n".encode() + event + b"\r\n"
        self.writer.write(event)
        try:
            await self.writer.drain()
        except ConnectionError:
            self.record.client_closed = True
            return False
        return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible loopback test server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--require-key", action="store_true",
                        help=f"every endpoint wants 'Authorization: Bearer {GOOD_KEY}'")
    args = parser.parse_args(argv)
    server = OpenAIServer(args.host, args.port, require_key=args.require_key)
    sys.stderr.write(f"openai test server on http://{args.host}:{args.port}/v1\n")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve_forever())


if __name__ == "__main__":
    main()
