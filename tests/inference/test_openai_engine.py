"""The ``openai`` engine against the real loopback server (tests/openai_server.py)."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

import inference.engines.openai as openai_engine
from inference.engines.base import ChatRequest, Delta, EndpointConfig
from inference.engines.openai import CANCELLED, OpenAIEngine, SSEParser, endpoint_urls
from inference.errors import (
    AuthFailed,
    BadRequest,
    ConnectionFailed,
    ContextTooLong,
    EngineTimeout,
    RateLimited,
    ServerError,
)
from inference.registry import engine_class
from tests.openai_server import OpenAIServer

SECRET = "sk-live-abcdef0123456789"


@pytest.fixture
async def make_engine(openai_server):
    """Builds engines pointed at the loopback server; closes them and the pool afterwards."""
    engines: list[OpenAIEngine] = []

    def make(model: str = "echo", **overrides) -> OpenAIEngine:
        settings = {"id": 1, "name": "loopback", "engine": "openai", "url": openai_server.url,
                    "upstream_model": model, **overrides}
        engine = OpenAIEngine(EndpointConfig(**settings))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.aclose()
    await openai_engine.aclose_clients()


def chat(text: str = "hello big world", **fields) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **fields)


async def collect(engine: OpenAIEngine, request: ChatRequest | None = None) -> list[Delta]:
    return [delta async for delta in engine.stream(request or chat())]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- answers -------------------------------------------------------------------------------


async def test_stream_yields_one_delta_per_token_then_finish_reason_and_usage(make_engine):
    deltas = await collect(make_engine("echo"))

    assert [d.text for d in deltas] == ["echo:", " hello", " big", " world", ""]
    assert [d.tokens for d in deltas] == [1, 1, 1, 1, 0]
    assert deltas[-1].finish_reason == "stop"
    assert (deltas[-1].usage.prompt_tokens, deltas[-1].usage.completion_tokens) == (3, 4)
    assert all(d.finish_reason is None for d in deltas[:-1])


async def test_generate_makes_one_non_streaming_call(make_engine, openai_server):
    completion = await make_engine("tokens-6").generate(chat(max_tokens=3))

    assert completion.text == "echo: hello big"
    assert completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 3
    body = openai_server.requests[-1].body
    assert body["stream"] is False
    assert "stream_options" not in body


async def test_messy_but_valid_sse_is_parsed(make_engine):
    deltas = await collect(make_engine("messy"))

    assert "".join(d.text for d in deltas) == "echo: hello big world"
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage.completion_tokens == 4


async def test_stream_framed_by_connection_close_completes(make_engine, openai_server):
    deltas = await collect(make_engine("close"))

    assert "".join(d.text for d in deltas) == "echo: hello big world"
    assert deltas[-1].finish_reason == "stop"


async def test_first_delta_reaches_the_caller_before_the_server_sends_the_last_token(
    make_engine, openai_server
):
    received: list[float] = []
    async for _delta in make_engine("slow-60+tokens-5").stream(chat()):
        received.append(time.monotonic())

    written = openai_server.requests[-1].chunk_times
    assert received[0] < written[-1] - 0.1  # several tokens still to come
    assert received[0] < written[-3]


async def test_consecutive_streams_and_calls_reuse_one_pooled_connection(make_engine,
                                                                        openai_server):
    engine = make_engine("echo")

    for _ in range(3):
        await collect(engine)
        await engine.generate(chat())

    assert len({recorded.connection for recorded in openai_server.requests}) == 1


# -- the request sent ----------------------------------------------------------------------


async def test_default_params_are_merged_under_request_values(make_engine, openai_server):
    engine = make_engine("echo", name="alias", upstream_model="upstream-7b",
                         params={"temperature": 0.2, "top_p": 0.5, "presence_penalty": 1.0},
                         max_output_tokens=77)

    await collect(engine, chat(temperature=0.9, extra={"presence_penalty": 0.1, "user": "u1"}))

    body = openai_server.requests[-1].body
    assert body["model"] == "upstream-7b"
    assert (body["temperature"], body["top_p"], body["presence_penalty"]) == (0.9, 0.5, 0.1)
    assert body["user"] == "u1"
    assert body["max_tokens"] == 77
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "hello big world"}]


async def test_api_key_is_sent_as_bearer_token(make_engine, openai_server):
    deltas = await collect(make_engine("auth", api_key="good-key"))

    assert deltas[-1].finish_reason == "stop"
    assert openai_server.requests[-1].headers["authorization"] == "Bearer good-key"


async def test_no_authorization_header_without_api_key(make_engine, openai_server):
    await collect(make_engine("echo"))

    assert "authorization" not in openai_server.requests[-1].headers


@pytest.mark.parametrize("suffix", ["", "/", "/chat", "/chat/completions"])
async def test_base_chat_and_full_urls_reach_the_same_endpoint(suffix, make_engine,
                                                               openai_server):
    engine = make_engine("echo", url=openai_server.url + suffix)

    completion = await engine.generate(chat())

    assert completion.text == "echo: hello big world"
    assert openai_server.requests[-1].path == "/v1/chat/completions"
    assert engine.models_url == f"{openai_server.url}/models"


def test_url_without_a_path_means_v1():
    assert endpoint_urls("http://gpu-box:8000") == ("http://gpu-box:8000/v1/chat/completions",
                                                    "http://gpu-box:8000/v1/models")


async def test_list_models_and_check_use_the_models_url(make_engine):
    engine = make_engine("echo")

    models = await engine.list_models()
    health = await engine.check()

    assert "echo" in models
    assert health.ok and health.models == models


# -- errors --------------------------------------------------------------------------------


async def test_bad_key_raises_auth_failed_without_the_key_in_the_message(make_engine):
    engine = make_engine("auth", api_key=SECRET)

    with pytest.raises(AuthFailed) as raised:
        await collect(engine)

    assert raised.value.status == 401
    assert "Incorrect API key" in str(raised.value)  # the backend's message is kept...
    assert SECRET not in str(raised.value)  # ...but the key it echoed is not
    with pytest.raises(AuthFailed) as raised_again:
        await engine.generate(chat())
    assert SECRET not in str(raised_again.value)


async def test_check_reports_a_refused_key_without_raising():
    with OpenAIServer(require_key=True) as server:
        engine = OpenAIEngine(EndpointConfig(id=1, name="locked", engine="openai",
                                             url=server.url, api_key=SECRET))
        health = await engine.check()
        await openai_engine.aclose_clients()

    assert not health.ok
    assert health.code == AuthFailed.code
    assert SECRET not in health.error


async def test_429_raises_rate_limited_with_retry_after_seconds(make_engine):
    with pytest.raises(RateLimited) as raised:
        await collect(make_engine("ratelimit-7"))

    assert raised.value.retry_after == 7.0


async def test_429_retry_after_as_http_date_is_turned_into_seconds(make_engine):
    with pytest.raises(RateLimited) as raised:
        await make_engine("ratelimitdate-30").generate(chat())

    assert 25 <= raised.value.retry_after <= 31


async def test_context_length_exceeded_raises_context_too_long(make_engine):
    engine = make_engine("context-2")

    with pytest.raises(ContextTooLong) as raised:
        await collect(engine)
    with pytest.raises(ContextTooLong):
        await engine.generate(chat())

    assert "maximum context length is 2" in str(raised.value)
    assert raised.value.retryable


async def test_other_400_raises_bad_request_that_is_not_retried(make_engine):
    with pytest.raises(BadRequest) as raised:
        await collect(make_engine("error-400"))

    assert type(raised.value) is BadRequest
    assert not raised.value.retryable
    assert "Simulated error 400" in str(raised.value)


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_raises_server_error(status, make_engine):
    engine = make_engine(f"error-{status}")

    with pytest.raises(ServerError) as raised:
        await collect(engine)
    with pytest.raises(ServerError):
        await engine.generate(chat())

    assert raised.value.status == status


async def test_closed_port_raises_connection_failed(make_engine):
    engine = make_engine("echo", url=f"http://127.0.0.1:{closed_port()}/v1")

    with pytest.raises(ConnectionFailed):
        await collect(engine)
    with pytest.raises(ConnectionFailed):
        await engine.generate(chat())


async def test_stream_dropped_mid_stream_raises_connection_failed_after_n_deltas(make_engine):
    received: list[Delta] = []

    with pytest.raises(ConnectionFailed) as raised:
        async for delta in make_engine("drop-after-3+tokens-10").stream(chat()):
            received.append(delta)

    assert [d.text for d in received] == ["echo:", " hello", " big"]
    assert "after 3 tokens" in str(raised.value)


async def test_non_streaming_call_dropped_raises_connection_failed(make_engine):
    with pytest.raises(ConnectionFailed):
        await make_engine("drop-after-0").generate(chat())


async def test_slow_headers_raise_first_byte_timeout(make_engine):
    engine = make_engine("slowstart-3000", first_byte_timeout=0.2)
    started = time.monotonic()

    with pytest.raises(EngineTimeout) as raised:
        await collect(engine)
    with pytest.raises(EngineTimeout) as raised_generate:
        await engine.generate(chat())

    assert raised.value.phase == raised_generate.value.phase == "first_byte"
    assert time.monotonic() - started < 1.5


async def test_slow_stream_raises_total_timeout_after_some_deltas(make_engine):
    received: list[Delta] = []
    engine = make_engine("slow-50+tokens-100", first_byte_timeout=1, total_timeout=0.4)

    with pytest.raises(EngineTimeout) as raised:
        async for delta in engine.stream(chat()):
            received.append(delta)

    assert raised.value.phase == "total"
    assert 2 <= len(received) < 20


# -- cancelling ----------------------------------------------------------------------------


async def test_cancel_stops_a_slow_stream_promptly_and_closes_the_connection(
    make_engine, openai_server
):
    engine = make_engine("slow-50+tokens-200")
    request = chat(request_id="req-42")
    received: list[Delta] = []

    started = time.monotonic()
    async for delta in engine.stream(request):
        received.append(delta)
        if len(received) == 2:
            await engine.cancel("req-42")

    assert time.monotonic() - started < 1.0
    assert received[-1].finish_reason == CANCELLED
    recorded = openai_server.requests[-1]
    assert openai_server.requests[-1].headers["x-request-id"] == "req-42"
    deadline = time.monotonic() + 2
    while not recorded.client_closed and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert recorded.client_closed
    assert len(recorded.chunk_times) < 20


async def test_cancel_stops_a_waiting_generate(make_engine):
    engine = make_engine("slowstart-3000")
    started = time.monotonic()

    task = asyncio.create_task(engine.generate(chat(request_id="req-7")))
    await asyncio.sleep(0.1)
    await engine.cancel("req-7")
    completion = await task

    assert completion.finish_reason == CANCELLED
    assert time.monotonic() - started < 1.0


async def test_leaving_a_stream_early_closes_its_connection(make_engine, openai_server):
    stream = make_engine("slow-50+tokens-200").stream(chat())
    async for _delta in stream:
        break
    await stream.aclose()

    recorded = openai_server.requests[-1]
    deadline = time.monotonic() + 2
    while not recorded.client_closed and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert recorded.client_closed


# -- pieces --------------------------------------------------------------------------------


def test_engine_is_registered_for_openai_and_vllm():
    assert engine_class("openai") is OpenAIEngine
    assert engine_class("vllm") is OpenAIEngine


async def test_one_pooled_client_per_event_loop():
    first = await openai_engine.shared_client()

    assert await openai_engine.shared_client() is first
    await openai_engine.aclose_clients()
    assert first.closed
    assert await openai_engine.shared_client() is not first
    await openai_engine.aclose_clients()


def test_pooled_client_of_a_short_lived_loop_is_closed_with_it():
    async def use_pool() -> aiohttp.ClientSession:
        return await openai_engine.shared_client()

    client = asyncio.run(use_pool())

    assert client.closed


def test_sse_parser_handles_split_lines_crlf_comments_and_multiline_data():
    parser = SSEParser()
    wire = (': comment\r\n\r\ndata:{"a":\r\ndata: 1}\r\n\r\nevent: x\ndata: [DONE]\n\n'
            "data: \u2028 inside\n\n").encode()

    events = [event for i in range(len(wire)) for event in parser.feed(wire[i:i + 1])]

    assert events == ['{"a":\n1}', "[DONE]", "\u2028 inside"]
    assert parser.flush() == []


def test_sse_parser_keeps_a_last_event_without_its_blank_line():
    parser = SSEParser()

    assert parser.feed(b"data: tail") == []
    assert parser.flush() == ["tail"]


def test_retry_after_accepts_milliseconds_header():
    headers = CIMultiDictProxy(CIMultiDict({"Retry-After-Ms": "1500", "Retry-After": "9"}))

    assert openai_engine.retry_after_seconds(headers) == 1.5
