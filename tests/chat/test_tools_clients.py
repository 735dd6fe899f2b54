"""Agent frameworks' own clients against OpenClaw, unchanged: ``langchain-openai``'s tool
binding and structured output, and ``litellm`` as a client with tools — the loops an
agent runs (call, tool result, answer) complete instead of stopping on a dropped call."""

from __future__ import annotations

import json
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch from the internet

import litellm  # noqa: E402
import pytest  # noqa: E402
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from routing.keys import create_key
from routing.models import ModelEndpoint

pytestmark = pytest.mark.django_db(transaction=True)


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class Forecast(BaseModel):
    """A forecast."""

    city: str
    days: int


@pytest.fixture
def secret(openai_server) -> str:
    ModelEndpoint.objects.create(name="gpt", engine="openai", endpoint_url=openai_server.url,
                                 upstream_model="echo")
    return create_key("agents")[1]


@pytest.fixture
def chat(live_server_url, secret) -> ChatOpenAI:
    return ChatOpenAI(model="gpt", base_url=f"{live_server_url}/v1", api_key=secret,
                      max_retries=0, timeout=20)


def test_langchain_bind_tools_round_trip(chat):
    bound = chat.bind_tools([get_weather])
    question = HumanMessage("What is the weather in Quito?")

    called = bound.invoke([question])
    (call,) = called.tool_calls
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    answered = bound.invoke([question, called, result])

    assert (call["name"], call["args"]) == ("get_weather", {"city": "Quito"})
    assert answered.content == "echo: tool results: sunny in Quito"
    assert not answered.tool_calls


def test_langchain_streams_a_tool_call_in_chunks(chat):
    chunks = list(chat.bind_tools([get_weather]).stream("weather in Accra please"))

    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert [c["name"] for c in whole.tool_calls] == ["get_weather"]
    assert whole.tool_calls[0]["args"] == {"city": "please"}
    assert len(chunks) > 3


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_langchain_structured_output(chat, method):
    structured = chat.with_structured_output(Forecast, method=method)

    forecast = structured.invoke("Forecast for Nairobi")

    assert forecast == Forecast(city="Nairobi", days=3)


def test_litellm_as_a_client_with_tools(live_server_url, secret):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}]

    called = litellm.completion(model="openai/gpt", api_base=f"{live_server_url}/v1",
                                api_key=secret, tools=tools,
                                messages=[{"role": "user", "content": "weather in Baku"}])
    streamed = litellm.completion(model="openai/gpt", api_base=f"{live_server_url}/v1",
                                  api_key=secret, tools=tools, stream=True,
                                  messages=[{"role": "user", "content": "weather in Baku"}])
    arguments = "".join(call.function.arguments or "" for chunk in streamed
                        for call in chunk.choices[0].delta.tool_calls or [])

    call = called.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Baku"}
    assert json.loads(arguments) == {"city": "Baku"}
    assert called.choices[0].finish_reason == "tool_calls"


def test_langchain_on_the_responses_api(live_server_url, secret):
    chat = ChatOpenAI(model="gpt", base_url=f"{live_server_url}/v1", api_key=secret,
                      max_retries=0, timeout=20, use_responses_api=True)
    bound = chat.bind_tools([get_weather])
    question = HumanMessage("What is the weather in Quito?")

    called = bound.invoke([question])
    (call,) = called.tool_calls
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    answered = bound.invoke([question, called, result])
    streamed = "".join(chunk.text for chunk in chat.stream("stream this"))

    assert (call["name"], call["args"]) == ("get_weather", {"city": "Quito"})
    assert answered.text == "echo: tool results: sunny in Quito"
    assert streamed == "echo: stream this"
