"""The whole chat wire format through OpenClaw, with the official clients unchanged:
tool calls (whole, streamed, parallel, a second turn with ``tool`` messages),
``n`` choices, logprobs, refusals, structured output and the answer-level fields —
passed through from a loopback backend that answers as OpenAI does; and what an engine
cannot honour refused with a 400 naming the field."""

from __future__ import annotations

import base64
import json

import httpx
import openai
import pytest
from pydantic import BaseModel

from routing import rules
from routing.keys import create_key
from routing.models import ModelEndpoint, RoutingRule

pytestmark = pytest.mark.django_db(transaction=True)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
CLOCK = {"type": "function", "function": {
    "name": "get_time", "description": "The local time in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "hours24": {"type": "boolean"}}}}}


@pytest.fixture
def models(openai_server):
    ModelEndpoint.objects.create(name="gpt", engine="openai", endpoint_url=openai_server.url,
                                 upstream_model="echo")
    ModelEndpoint.objects.create(name="careful", engine="openai", upstream_model="refuse",
                                 endpoint_url=openai_server.url)
    ModelEndpoint.objects.create(name="echo", engine="echo")
    return openai_server


@pytest.fixture
def client(live_server_url, models) -> openai.OpenAI:
    secret = create_key("tools")[1]
    return openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=secret, max_retries=0,
                         timeout=20)


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_a_tool_call_comes_back_whole(client):
    answer = client.chat.completions.create(model="gpt", tools=[WEATHER],
                                            messages=ask("What is the weather in Paris?"))

    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert answer.system_fingerprint == "fp_openclaw_tests"


def test_streamed_tool_call_fragments_join_into_the_same_calls(client):
    events = list(client.chat.completions.create(
        model="gpt", tools=[WEATHER, CLOCK], stream=True,
        messages=ask("get_weather and get_time for Tokyo")))

    calls: dict[int, dict] = {}
    finish = None
    for event in events:
        for choice in event.choices:
            finish = choice.finish_reason or finish
            for fragment in choice.delta.tool_calls or []:
                call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += fragment.id or ""
                call["name"] += fragment.function.name or ""
                call["arguments"] += fragment.function.arguments or ""
    assert finish == "tool_calls"
    assert [c["name"] for c in calls.values()] == ["get_weather", "get_time"]
    assert all(c["id"].startswith("call_") for c in calls.values())
    assert json.loads(calls[1]["arguments"]) == {"city": "Tokyo", "hours24": True}
    assert sum(len(e.choices[0].delta.tool_calls or []) for e in events if e.choices) > 4


def test_parallel_calls_can_be_turned_off_and_a_tool_can_be_forced(client):
    one = client.chat.completions.create(
        model="gpt", tools=[WEATHER, CLOCK], parallel_tool_calls=False,
        messages=ask("get_weather and get_time for Rome"))
    forced = client.chat.completions.create(
        model="gpt", tools=[WEATHER, CLOCK], messages=ask("anything at all in Oslo"),
        tool_choice={"type": "function", "function": {"name": "get_time"}})

    assert [c.function.name for c in one.choices[0].message.tool_calls] == ["get_weather"]
    assert [c.function.name for c in forced.choices[0].message.tool_calls] == ["get_time"]


def test_a_second_turn_sends_the_tool_results_back(client, models):
    first = client.chat.completions.create(model="gpt", tools=[WEATHER],
                                           messages=ask("What is the weather in Lima?"))
    call = first.choices[0].message.tool_calls[0]
    history = [*ask("What is the weather in Lima?"), first.choices[0].message.model_dump(
        exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "sunny 24C"}]

    second = client.chat.completions.create(model="gpt", tools=[WEATHER], messages=history)

    assert second.choices[0].message.content == "echo: tool results: sunny 24C"
    sent = models.requests[-1].body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id and sent[2]["role"] == "tool"


def test_n_choices_logprobs_and_the_service_tier_pass_through(client):
    answer = client.chat.completions.create(model="gpt", n=2, logprobs=True, top_logprobs=2,
                                            messages=ask("two answers please"))

    assert [c.index for c in answer.choices] == [0, 1]
    assert all(c.message.content == "echo: two answers please" for c in answer.choices)
    first = answer.choices[0].logprobs.content
    assert [e.token for e in first] == ["echo:", " two", " answers", " please"]
    assert len(first[0].top_logprobs) == 2
    assert answer.service_tier == "default"


def test_streamed_choices_and_logprobs_arrive_per_choice(client):
    events = list(client.chat.completions.create(
        model="gpt", n=2, logprobs=True, stream=True, stream_options={"include_usage": True},
        messages=ask("hello there")))

    texts: dict[int, str] = {}
    tokens: dict[int, list[str]] = {}
    for event in events:
        for choice in event.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.logprobs and choice.logprobs.content:
                tokens.setdefault(choice.index, []).extend(
                    e.token for e in choice.logprobs.content)
    assert texts == {0: "echo: hello there", 1: "echo: hello there"}
    assert tokens[1] == ["echo:", " hello", " there"]
    assert events[-1].usage.completion_tokens == 6 and events[-1].choices == []


def test_a_refusal_is_passed_back_whole_and_streamed(client):
    whole = client.chat.completions.create(model="careful", messages=ask("do harm"))
    streamed = "".join(e.choices[0].delta.refusal or "" for e in client.chat.completions.create(
        model="careful", stream=True, messages=ask("do harm")) if e.choices)

    assert whole.choices[0].message.refusal == "I can't help with that request."
    assert whole.choices[0].message.content is None
    assert streamed.strip() == "I can't help with that request."


class Weather(BaseModel):
    city: str
    days: int


def test_structured_output_parses_into_the_callers_model(client):
    parsed = client.chat.completions.parse(model="gpt", response_format=Weather,
                                           messages=ask("Forecast for three days in Bern"))

    assert parsed.choices[0].message.parsed == Weather(city="Bern", days=6)


def test_what_an_engine_cannot_honour_is_refused_naming_the_field(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="echo", tools=[WEATHER], messages=ask("hi"))
    with pytest.raises(openai.BadRequestError) as logprobs:
        client.chat.completions.create(model="echo", logprobs=True, messages=ask("hi"))
    two = client.chat.completions.create(model="echo", n=2, messages=ask("hi both"))

    assert refused.value.body["code"] == "unsupported_parameter"
    assert refused.value.body["param"] == "tools" and "echo" in refused.value.body["message"]
    assert logprobs.value.body["param"] == "logprobs"
    assert [c.message.content for c in two.choices] == ["hi both", "hi both"]


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": {"a": 1}, "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
    ({"messages": ask("x"), "n": 1_000_000}, "n"),
    ({"messages": ask("x"), "top_logprobs": 3}, "top_logprobs"),
    ({"messages": ask("x"), "tools": [{"type": "function", "function": {"name": "a b"}}]},
     "tools[0].function.name"),
    ({"messages": ask("x"), "tools": [WEATHER], "tool_choice": {
        "type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"messages": [{"role": "tool", "content": "r"}]}, "messages[0].tool_call_id"),
])
def test_malformed_fields_get_400_naming_the_parameter(client, body, param):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt", **body)

    assert refused.value.status_code == 400 and refused.value.body["param"] == param


def test_bodies_no_client_should_send_are_400_not_500(live_server_url, client):
    headers = {"Authorization": f"Bearer {client.api_key}", "Content-Type": "application/json"}
    surrogate = b'{"model": "gpt", "messages": [{"role": "user", "content": "a\\ud800b"}]}'
    deep = b'{"model": "gpt", "messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    answers = [httpx.post(f"{live_server_url}/v1/chat/completions", content=raw,
                          headers=headers, timeout=10) for raw in (surrogate, deep)]

    assert [a.status_code for a in answers] == [400, 400]
    assert all(a.json()["error"]["type"] == "invalid_request_error" for a in answers)


def test_a_stream_that_dies_inside_a_tool_call_errors_and_is_not_continued(client, models):
    ModelEndpoint.objects.create(name="fragile", engine="openai", endpoint_url=models.url,
                                 upstream_model="echo+drop-after-3")
    RoutingRule.objects.create(name="fragile falls back", priority=1, target_model="fragile",
                               condition={"field": "model", "op": "eq", "value": "fragile"},
                               fallbacks=["gpt"])
    rules.bump_version()
    stream = client.chat.completions.create(model="fragile", tools=[WEATHER], stream=True,
                                            messages=ask("weather in Kyiv"))

    with pytest.raises(openai.APIError) as failed:
        for _event in stream:
            pass

    assert "dropped" in str(failed.value) or "connection" in str(failed.value).lower()
    assert not models.requests_for("echo")  # no model was asked to continue a half call


def test_a_temperature_zero_tool_call_is_cached_with_its_calls(client, models):
    first = client.chat.completions.with_raw_response.create(
        model="gpt", tools=[WEATHER], temperature=0, messages=ask("weather in Hanoi"))
    again = client.chat.completions.with_raw_response.create(
        model="gpt", tools=[WEATHER], temperature=0, messages=ask("weather in Hanoi"))

    assert (first.headers["x-openclaw-cache"], again.headers["x-openclaw-cache"]) == (
        "miss", "hit")
    assert again.parse().choices[0].message.tool_calls[0].function.name == "get_weather"
    assert len(models.requests_for("echo")) == 1


# --- more surfaces on the same core ----------------------------------------------------


def test_models_retrieve_names_one_model_or_404s(client):
    found = client.models.retrieve("gpt")

    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert (found.id, found.object, found.owned_by) == ("gpt", "model", "openclaw")
    assert missing.value.body["code"] == "model_not_found"


def test_legacy_completions_whole_streamed_echoed_and_with_logprobs(client, models):
    whole = client.completions.create(model="gpt", prompt="hello legacy world", max_tokens=8)
    echoed = client.completions.create(model="gpt", prompt=["one two", "three"], echo=True,
                                       n=2, logprobs=2)
    streamed = list(client.completions.create(model="gpt", prompt="stream me please",
                                              stream=True))

    assert whole.object == "text_completion"
    assert whole.choices[0].text == "echo: hello legacy world"
    assert models.requests[-1].body["messages"] == [{"role": "user", "content": "stream me please"}]
    assert [c.index for c in echoed.choices] == [0, 1, 2, 3]
    assert echoed.choices[2].text == "three" + "echo: three"
    logprobs = echoed.choices[0].logprobs
    assert logprobs.tokens == ["echo:", " one", " two"]
    assert logprobs.text_offset == [7, 12, 16] and len(logprobs.top_logprobs[0]) <= 2
    assert "".join(e.choices[0].text for e in streamed if e.choices) == "echo: stream me please"
    assert streamed[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(("fields", "param"), [
    ({"suffix": "end"}, "suffix"), ({"best_of": 3}, "best_of"),
    ({"prompt": [1, 2, 3]}, "prompt"), ({"prompt": ["a", "b"], "stream": True}, "prompt"),
    ({"logprobs": 9}, "logprobs"),
])
def test_legacy_completions_refuse_what_they_cannot_give(client, fields, param):
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(**{"model": "gpt", "prompt": "x", **fields})

    assert refused.value.body["param"] == param


def test_audio_output_passes_through_whole_and_streamed(client):
    asked = dict(model="gpt", modalities=["text", "audio"],
                 audio={"voice": "alloy", "format": "wav"}, messages=ask("say hello"))

    whole = client.chat.completions.create(**asked)
    pieces = [c.choices[0].delta.audio.model_dump(exclude_none=True)
              for c in client.chat.completions.create(stream=True, **asked)
              if c.choices and c.choices[0].delta.audio]

    audio = whole.choices[0].message.audio
    assert audio.transcript == "echo: say hello" and audio.id == "audio_openclaw_tests"
    assert base64.b64decode(audio.data) == b"echo: say hello"
    assert "".join(p.get("transcript", "") for p in pieces) == "echo: say hello"
    assert any("data" in p for p in pieces)
