"""Malformed Anthropic Messages bodies from a JSON fuzzer (hypothesis, derandomized):
a valid request with one field — top-level, in a message or in a content block —
replaced by arbitrary JSON, or the body itself arbitrary JSON. Every answer is a 2xx
or a 4xx in Anthropic's error shape; never a 5xx, never a hang."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing.keys import create_key
from routing.models import ModelEndpoint

pytestmark = pytest.mark.django_db(transaction=True)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
VALID = {"model": "claude", "max_tokens": 16, "system": "Be brief.",
         "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
         "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}
TOP = ["model", "max_tokens", "system", "messages", "tools", "tool_choice", "temperature",
       "top_p", "top_k", "stop_sequences", "metadata", "stream", "thinking"]


@st.composite
def bodies(draw) -> object:
    shape = draw(st.sampled_from(["top", "message", "block", "whole"]))
    body = json.loads(json.dumps(VALID))
    value = draw(JSON)
    if shape == "whole":
        return value
    if shape == "top":
        body[draw(st.sampled_from(TOP))] = value
    elif shape == "message":
        body["messages"][0][draw(st.sampled_from(["role", "content", "extra"]))] = value
    else:
        body["messages"][0]["content"][0][draw(st.sampled_from(["type", "text", "source"]))] \
            = value
    return body


@pytest.fixture
def post(live_server_url, openai_server):
    ModelEndpoint.objects.create(name="claude", engine="openai", upstream_model="echo",
                                 endpoint_url=openai_server.url)
    headers = {"x-api-key": create_key("fuzz")[1], "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=live_server_url, headers=headers, timeout=20) as client:
        yield lambda body: client.post("/v1/messages", content=json.dumps(body))


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(body=bodies())
def test_malformed_bodies_get_a_4xx_in_anthropics_shape(post, body):
    response = post(body)

    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()
        assert error["type"] == "error" and isinstance(error["error"]["message"], str)
        assert error["error"]["type"].endswith("_error") or error["error"]["type"] in {
            "request_too_large"}
