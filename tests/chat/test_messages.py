"""Anthropic's Messages API (``/v1/messages``) through OpenClaw with the official
``anthropic`` SDK unchanged, any backend behind it (here an OpenAI-compatible loopback
server): plain and streamed messages with Anthropic's events, ``system``, stop
reasons, ``tool_use`` / ``tool_result`` round trips whole and streamed,
``count_tokens``, and every refusal in Anthropic's error shape."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from routing.keys import create_key
from routing.models import ModelEndpoint

pytestmark = pytest.mark.django_db(transaction=True)

WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}
CLOCK = {"name": "get_time", "description": "The time in a city.",
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.fixture
def secret(openai_server) -> str:
    ModelEndpoint.objects.create(name="claude", engine="openai", upstream_model="echo",
                                 endpoint_url=openai_server.url)
    ModelEndpoint.objects.create(name="careful", engine="openai", upstream_model="refuse",
                                 endpoint_url=openai_server.url)
    return create_key("anthropic")[1]


@pytest.fixture
def client(live_server_url, secret) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=live_server_url, api_key=secret, max_retries=0,
                               timeout=20)


def test_a_message_answers_with_text_usage_and_stop_reason(client, openai_server):
    message = client.messages.create(model="claude", max_tokens=100, system="Be terse.",
                                     messages=[{"role": "user", "content": "hello there"}])

    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and message.model == "claude"
    assert [block.text for block in message.content] == ["echo: hello there"]
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 3 and message.usage.input_tokens > 0
    (sent,) = openai_server.requests_for("echo")
    assert sent.body["messages"][0] == {"role": "system", "content": "Be terse."}
    assert sent.body["max_tokens"] == 100


def test_max_tokens_stops_with_max_tokens(client):
    message = client.messages.create(model="claude", max_tokens=2, messages=[
        {"role": "user", "content": "one two three four"}])

    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 2


def test_a_streamed_message_sends_anthropics_events(client):
    with client.messages.stream(model="claude", max_tokens=50, messages=[
            {"role": "user", "content": "stream me please"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()

    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert final.content[0].text == "echo: stream me please"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4


def test_tool_use_round_trip_with_a_tool_result(client, openai_server):
    question = {"role": "user", "content": "get_weather in Cairo"}
    called = client.messages.create(model="claude", max_tokens=100, tools=[WEATHER],
                                    messages=[question])

    (use,) = [block for block in called.content if block.type == "tool_use"]
    assert called.stop_reason == "tool_use"
    assert use.name == "get_weather" and use.input == {"city": "Cairo"}
    answered = client.messages.create(model="claude", max_tokens=100, tools=[WEATHER],
                                      messages=[question,
                                                {"role": "assistant", "content": called.content},
                                                {"role": "user", "content": [{
                                                    "type": "tool_result",
                                                    "tool_use_id": use.id,
                                                    "content": "hot"}]}])
    assert answered.content[0].text == "echo: tool results: hot"
    sent = openai_server.requests_for("echo")[-1].body["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == use.id
    assert sent[-1] == {"role": "tool", "tool_call_id": use.id, "content": "hot"}


def test_tool_choice_and_disabled_parallel_use_reach_the_backend(client, openai_server):
    message = client.messages.create(
        model="claude", max_tokens=100, tools=[WEATHER, CLOCK],
        tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "get_weather and get_time in Rome"}])

    assert [block.name for block in message.content] == ["get_time"]
    sent = openai_server.requests_for("echo")[-1].body
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert sent["parallel_tool_calls"] is False


def test_streamed_tool_use_arrives_as_input_json_pieces(client):
    with client.messages.stream(model="claude", max_tokens=100, tools=[WEATHER, CLOCK],
                                messages=[{"role": "user",
                                           "content": "get_weather and get_time in Lagos"}]
                                ) as stream:
        events = list(stream)
        final = stream.get_final_message()

    pieces = [e for e in events if e.type == "content_block_delta"
              and e.delta.type == "input_json_delta"]
    assert len(pieces) > 2
    assert [(b.name, b.input) for b in final.content] == [("get_weather", {"city": "Lagos"}),
                                                          ("get_time", {"city": "Lagos"})]
    assert final.stop_reason == "tool_use"


def test_a_refusal_has_the_refusal_stop_reason(client):
    message = client.messages.create(model="careful", max_tokens=50,
                                     messages=[{"role": "user", "content": "bad things"}])

    assert message.stop_reason == "refusal" and message.content[0].text


def test_count_tokens_counts_the_prompt(client):
    short = client.messages.count_tokens(model="claude", messages=[
        {"role": "user", "content": "hi"}])
    longer = client.messages.count_tokens(model="claude", tools=[WEATHER], messages=[
        {"role": "user", "content": "hi " * 200}])

    assert 0 < short.input_tokens < longer.input_tokens


def test_errors_come_in_anthropics_shape(client, live_server_url):
    stranger = anthropic.Anthropic(base_url=live_server_url, api_key="sk-nope",
                                   max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as denied:
        stranger.messages.create(model="claude", max_tokens=5,
                                 messages=[{"role": "user", "content": "hi"}])
    assert denied.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="claude", max_tokens=5,
                               messages=[{"role": {"x": 1}, "content": "hi"}])
    assert bad.value.body == {"type": "error", "error": {
        "type": "invalid_request_error", "message": bad.value.body["error"]["message"]}}
    assert "messages.0.role" in bad.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no-such-model", max_tokens=5,
                               messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["error"]["type"] == "not_found_error"


def test_the_version_header_is_required_and_a_bearer_key_works(live_server_url, secret):
    body = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user",
                                                            "content": "hi"}]}
    unversioned = httpx.post(f"{live_server_url}/v1/messages", json=body,
                             headers={"x-api-key": secret})
    bearer = httpx.post(f"{live_server_url}/v1/messages", json=body, headers={
        "authorization": f"Bearer {secret}", "anthropic-version": "2023-06-01"})

    assert unversioned.status_code == 400
    assert unversioned.json()["error"]["message"] == "anthropic-version: header is required"
    assert bearer.status_code == 200 and bearer.json()["content"][0]["text"] == "echo: hi"


@pytest.mark.parametrize(("fields", "where"), [
    ({"max_tokens": None}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0"),
    ({"temperature": 1.5}, "temperature"),
    ({"messages": [{"role": "user", "content": [{"type": "document"}]}]},
     "messages.0.content.0.type"),
])
def test_bodies_that_cannot_be_served_get_400_naming_the_field(client, fields, where):
    body = {"model": "claude", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]} | fields
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.post("/v1/messages", body=body, cast_to=httpx.Response)
    assert bad.value.body["error"]["message"].startswith(where)


def test_a_body_over_the_limit_is_413_in_anthropics_shape(live_server_url, secret):
    big = b'{"model": "claude", "max_tokens": 5, "messages": [' + b" " * (33 * 2**20) + b"]}"
    response = httpx.post(f"{live_server_url}/v1/messages", content=big, headers={
        "x-api-key": secret, "anthropic-version": "2023-06-01",
        "content-type": "application/json"}, timeout=30)

    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
