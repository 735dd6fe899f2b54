"""The loopback server itself, checked through plain httpx against OpenAI's wire format,
so that the engine tests built on it can be trusted."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.openai_server import OpenAIServer

REPO_ROOT = Path(__file__).resolve().parents[2]

USER = [{"role": "user", "content": "hello big world"}]


def test_models_endpoint_lists_openai_model_objects(openai_server):
    response = httpx.get(f"{openai_server.url}/models")

    assert response.status_code == 200
    payload = response.json()
    assert payload["object"] == "list"
    assert {"id": "echo", "object": "model", "created": 0,
            "owned_by": "openclaw-tests"} in payload["data"]


def test_chat_completion_echoes_the_last_user_message_with_word_usage(openai_server):
    body = {"model": "echo", "messages": [{"role": "system", "content": "be brief"}, *USER]}

    response = httpx.post(f"{openai_server.url}/chat/completions", json=body,
                          headers={"Authorization": "Bearer k1"})

    payload = response.json()
    assert payload["object"] == "chat.completion"
    assert payload["choices"][0]["message"] == {"role": "assistant",
                                                "content": "echo: hello big world",
                                                "refusal": None}
    assert payload["choices"][0]["finish_reason"] == "stop"
    assert payload["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    recorded = openai_server.requests[-1]
    assert (recorded.method, recorded.path, recorded.body) == ("POST", "/v1/chat/completions",
                                                               body)
    assert recorded.headers["authorization"] == "Bearer k1"


def test_stream_is_chunked_sse_with_one_chunk_per_token_usage_and_done(openai_server):
    body = {"model": "tokens-3", "messages": USER, "stream": True,
            "stream_options": {"include_usage": True}}

    with httpx.stream("POST", f"{openai_server.url}/chat/completions", json=body) as response:
        raw = response.read().decode()

    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [event for event in raw.split("\n\n") if event]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert contents == ["", "echo:", " hello", " big", None]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 3,
                                   "total_tokens": 6}
    assert len(openai_server.requests[-1].chunk_times) == len(events)


def test_keep_alive_serves_several_requests_on_one_connection(openai_server):
    with httpx.Client() as client:
        for _ in range(3):
            client.post(f"{openai_server.url}/chat/completions",
                        json={"model": "echo", "messages": USER})

    assert len({recorded.connection for recorded in openai_server.requests}) == 1


def test_embeddings_are_deterministic_unit_vectors_for_a_string_or_a_list(openai_server):
    url = f"{openai_server.url}/embeddings"

    one = httpx.post(url, json={"model": "embed-small", "input": "hello"}).json()
    many = httpx.post(url, json={"model": "embed-small", "input": ["hello", "world"]}).json()

    assert one["object"] == "list"
    assert [item["index"] for item in many["data"]] == [0, 1]
    assert many["data"][0]["embedding"] == one["data"][0]["embedding"]
    assert many["data"][1]["embedding"] != one["data"][0]["embedding"]
    assert math.isclose(sum(v * v for v in one["data"][0]["embedding"]), 1.0, abs_tol=1e-4)


def test_error_scenarios_answer_with_openai_error_bodies(openai_server):
    url = f"{openai_server.url}/chat/completions"

    bad = httpx.post(url, json={"model": "error-400", "messages": USER})
    limited = httpx.post(url, json={"model": "ratelimit-7", "messages": USER})
    refused = httpx.post(url, json={"model": "auth", "messages": USER},
                         headers={"Authorization": "Bearer wrong"})
    allowed = httpx.post(url, json={"model": "auth", "messages": USER},
                         headers={"Authorization": "Bearer good-key"})

    assert bad.status_code == 400
    assert set(bad.json()["error"]) == {"message", "type", "param", "code"}
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "7")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert allowed.status_code == 200


def test_flaky_fails_its_share_of_calls_deterministically(openai_server):
    url = f"{openai_server.url}/chat/completions"

    statuses = [httpx.post(url, json={"model": "flaky-50", "messages": USER}).status_code
                for _ in range(4)]

    assert statuses == [500, 200, 500, 200]


def test_runs_standalone_as_a_module():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.openai_server", "--port", str(port)],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/v1/models")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "standalone server did not start"
                time.sleep(0.05)
        assert response.status_code == 200
    finally:
        process.terminate()
        process.wait(10)


def test_context_manager_stops_the_server():
    with OpenAIServer() as server:
        url = server.url
        assert httpx.get(f"{url}/models").status_code == 200

    try:
        httpx.get(f"{url}/models", timeout=2)
    except httpx.ConnectError:
        pass
    else:
        raise AssertionError("the server still answers after stop()")
