"""Every ``/v1`` surface's main paths again, but served in this test process (the ASGI
application behind httpx's ASGI transport, the official async clients on top), so that
coverage measures the surfaces' code: the live-server tests beside this one run the
same code in a server process, which coverage does not see. The backend is the
loopback OpenAI-compatible server, as there."""

from __future__ import annotations

import json

import anthropic
import httpx
import httpx2  # the anthropic SDK's fork of httpx
import openai
import pytest
from pydantic import BaseModel

from openclaw_site.asgi import application
from routing.keys import create_key
from routing.models import ModelEndpoint

pytestmark = pytest.mark.django_db(transaction=True)

BASE = "http://127.0.0.1"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


class Forecast(BaseModel):
    city: str
    days: int


@pytest.fixture
def secret(openai_server) -> str:
    ModelEndpoint.objects.create(name="gpt", engine="openai", endpoint_url=openai_server.url,
                                 upstream_model="echo")
    ModelEndpoint.objects.create(name="careful", engine="openai", upstream_model="refuse",
                                 endpoint_url=openai_server.url)
    return create_key("in-process")[1]


def transport(http=httpx):
    return http.AsyncClient(transport=http.ASGITransport(app=application), base_url=BASE,
                            timeout=20)


@pytest.fixture
def client(secret) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{BASE}/v1", api_key=secret, max_retries=0,
                              http_client=transport())


@pytest.fixture
def claude(secret) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=BASE, api_key=secret, max_retries=0,
                                    http_client=transport(httpx2))


async def test_responses_whole_streamed_chained_and_stored(client):
    first = await client.responses.create(model="gpt", input="my name is Ada",
                                          instructions="Be brief.")
    second = await client.responses.create(model="gpt", input="and yours?",
                                           previous_response_id=first.id)
    events = [e async for e in await client.responses.create(
        model="gpt", input="stream this", stream=True, top_logprobs=2)]
    parsed = await client.responses.parse(model="gpt", text_format=Forecast,
                                          input="Forecast for three days in Bern")

    assert first.output_text == "echo: my name is Ada"
    assert second.previous_response_id == first.id
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "echo: stream this"
    assert parsed.output_parsed == Forecast(city="Bern", days=6)
    assert (await client.responses.retrieve(first.id)).id == first.id
    items = await client.responses.input_items.list(first.id, order="asc", limit=1)
    assert items.data[0].content[0].text == "my name is Ada"
    await client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(first.id)


async def test_responses_function_calls_whole_and_streamed(client):
    tool = {"type": "function", "name": "get_weather",
            "parameters": WEATHER["function"]["parameters"]}
    called = await client.responses.create(model="gpt", input="get_weather in Oslo",
                                           tools=[tool], tool_choice="auto")
    (call,) = [item for item in called.output if item.type == "function_call"]
    answered = await client.responses.create(
        model="gpt", previous_response_id=called.id, tools=[tool],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    streamed = [e async for e in await client.responses.create(
        model="gpt", input="get_weather in Lima", tools=[tool], stream=True)]
    refused = await client.responses.create(model="careful", input="bad")
    refused_stream = [e async for e in await client.responses.create(
        model="careful", input="bad", stream=True)]

    assert json.loads(call.arguments) == {"city": "Oslo"}
    assert answered.output_text == "echo: tool results: sunny"
    assert streamed[-1].response.output[0].type == "function_call"
    assert refused.output[0].content[0].type == "refusal"
    assert any(e.type == "response.refusal.done" for e in refused_stream)
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(model="gpt", input="hi", background=True)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="gpt", input="hi", previous_response_id="resp_x")


async def test_messages_whole_streamed_with_tools_and_counted(claude, openai_server):
    tool = {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}
    question = {"role": "user", "content": "get_weather in Cairo"}
    called = await claude.messages.create(model="gpt", max_tokens=50, tools=[tool],
                                          system=[{"type": "text", "text": "Be brief."}],
                                          messages=[question], extra_body={"top_k": 5},
                                          metadata={"user_id": "u1"})
    (use,) = [block for block in called.content if block.type == "tool_use"]
    answered = await claude.messages.create(model="gpt", max_tokens=50, tools=[tool], messages=[
        question, {"role": "assistant", "content": called.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": [{"type": "text", "text": "hot"}]},
                                     {"type": "text", "text": "and now?"}]}])
    async with claude.messages.stream(model="gpt", max_tokens=50, tools=[tool],
                                      tool_choice={"type": "any"},
                                      messages=[question]) as stream:
        final = await stream.get_final_message()
    async with claude.messages.stream(model="careful", max_tokens=50,
                                      messages=[{"role": "user", "content": "bad"}]) as stream:
        refused = await stream.get_final_message()
    counted = await claude.messages.count_tokens(model="gpt", messages=[question],
                                                 tools=[tool])

    assert called.stop_reason == "tool_use" and use.input == {"city": "Cairo"}
    sent = openai_server.requests_for("echo")[1].body["messages"]
    assert [m["role"] for m in sent[-3:]] == ["assistant", "tool", "user"]
    assert answered.stop_reason == "tool_use"  # the new user text asks again
    assert final.content[0].type == "tool_use" and final.stop_reason == "tool_use"
    assert refused.stop_reason == "refusal"
    assert counted.input_tokens > 0
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}
    with pytest.raises(anthropic.BadRequestError):
        await claude.messages.create(model="gpt", max_tokens=5, thinking={
            "type": "enabled", "budget_tokens": 1024}, messages=[question])
    pictured = await claude.messages.create(model="gpt", max_tokens=5, messages=[
        {"role": "user", "content": [image, {"type": "text", "text": "what is it"}]}])
    assert pictured.content[0].text.startswith("echo:")


async def test_chat_and_legacy_completions_with_tools_choices_and_logprobs(client):
    called = await client.chat.completions.create(
        model="gpt", tools=[WEATHER], messages=[{"role": "user", "content": "Paris weather"}])
    chunks = [c async for c in await client.chat.completions.create(
        model="gpt", n=2, logprobs=True, top_logprobs=1, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "two answers"}])]
    legacy = await client.completions.create(model="gpt", prompt=["one", "two"], echo=True,
                                             logprobs=1, max_tokens=5)
    legacy_stream = [c async for c in await client.completions.create(
        model="gpt", prompt="streamed words", stream=True)]

    assert called.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert {choice.index for chunk in chunks for choice in chunk.choices} == {0, 1}
    assert chunks[-1].usage is not None
    assert [choice.text for choice in legacy.choices] == ["oneecho: one", "twoecho: two"]
    assert "".join(c.choices[0].text for c in legacy_stream if c.choices) \
        == "echo: streamed words"
    model = await client.models.retrieve("gpt")
    assert model.id == "gpt"
