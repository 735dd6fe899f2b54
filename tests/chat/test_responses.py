"""OpenAI's Responses API (``/v1/responses``) through OpenClaw with the official
``openai`` SDK unchanged: plain and streamed (its typed events, the SDK's
``responses.stream`` helper), ``instructions``, function tools and their outputs,
structured output, ``previous_response_id`` conversations kept encrypted, retrieve,
delete and ``input_items`` — and a stored response unseen by another key."""

from __future__ import annotations

import json

import openai
import pytest
from django.db import connection
from pydantic import BaseModel

from chat.models import StoredResponse
from routing.keys import create_key
from routing.models import ModelEndpoint

pytestmark = pytest.mark.django_db(transaction=True)

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


@pytest.fixture
def client(live_server_url, openai_server) -> openai.OpenAI:
    ModelEndpoint.objects.create(name="gpt", engine="openai", endpoint_url=openai_server.url,
                                 upstream_model="echo")
    ModelEndpoint.objects.create(name="careful", engine="openai", upstream_model="refuse",
                                 endpoint_url=openai_server.url)
    return openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=create_key("r")[1],
                         max_retries=0, timeout=20)


def test_a_response_answers_with_its_output_text_and_usage(client, openai_server):
    response = client.responses.create(model="gpt", input="hello there",
                                       instructions="Be brief.", max_output_tokens=50)

    assert response.status == "completed" and response.object == "response"
    assert response.output_text == "echo: hello there"
    assert response.id.startswith("resp_") and response.instructions == "Be brief."
    assert response.usage.output_tokens == 3 and response.usage.input_tokens > 0
    (sent,) = openai_server.requests_for("echo")
    assert sent.body["messages"] == [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "hello there"}]
    assert sent.body["max_tokens"] == 50


def test_a_streamed_response_sends_the_typed_events_in_order(client):
    events = list(client.responses.create(model="gpt", input="one two three", stream=True))

    kinds = [event.type for event in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: one two three"
    assert events[-1].response.output_text == text and events[-1].response.usage.output_tokens


def test_the_sdk_stream_helper_gives_the_final_response(client):
    with client.responses.stream(model="gpt", input="streamed helper") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "echo: streamed helper"


def test_function_tools_call_and_take_their_outputs_back(client, openai_server):
    first = client.responses.create(model="gpt", input="get_weather for Oslo", tools=[WEATHER])

    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}
    second = client.responses.create(
        model="gpt", previous_response_id=first.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert second.output_text == "echo: tool results: sunny"
    sent = openai_server.requests_for("echo")[-1].body["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == call.call_id
    assert sent[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}


def test_streamed_function_call_arguments_arrive_in_pieces(client):
    events = list(client.responses.create(model="gpt", input="get_weather for Lima",
                                          tools=[WEATHER], stream=True))

    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(pieces) > 1 and "".join(pieces) == done.arguments
    assert json.loads(done.arguments) == {"city": "Lima"}
    (item,) = events[-1].response.output
    assert item.type == "function_call" and item.status == "completed"


class Weather(BaseModel):
    city: str
    days: int


def test_structured_output_parses_into_the_callers_model(client):
    parsed = client.responses.parse(model="gpt", input="Forecast for three days in Bern",
                                      text_format=Weather)

    assert parsed.output_parsed == Weather(city="Bern", days=6)


def test_previous_response_id_continues_the_conversation(client, openai_server):
    first = client.responses.create(model="gpt", input="my name is Ada")
    second = client.responses.create(model="gpt", input="what is it?",
                                     previous_response_id=first.id)

    sent = openai_server.requests_for("echo")[-1].body["messages"]
    assert sent == [{"role": "user", "content": "my name is Ada"},
                    {"role": "assistant", "content": "echo: my name is Ada"},
                    {"role": "user", "content": "what is it?"}]
    assert second.previous_response_id == first.id


def test_stored_responses_are_retrieved_listed_and_deleted(client):
    made = client.responses.create(model="gpt", input=[
        {"role": "user", "content": "first"}, {"role": "user", "content": "second"}])

    assert client.responses.retrieve(made.id).output_text == made.output_text
    items = client.responses.input_items.list(made.id)
    assert [item.content[0].text for item in items.data] == ["second", "first"]
    ascending = client.responses.input_items.list(made.id, order="asc", limit=1)
    assert [item.content[0].text for item in ascending.data] == ["first"]
    assert ascending.has_more
    client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(made.id)


def test_a_stored_response_is_encrypted_and_unseen_by_another_key(client, live_server_url):
    made = client.responses.create(model="gpt", input="secret plans")

    with connection.cursor() as cursor:
        cursor.execute("SELECT response, input_items FROM chat_storedresponse WHERE id = %s",
                       [made.id])
        stored = " ".join(cursor.fetchone())
    assert "secret" not in stored and "plans" not in stored
    stranger = openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=create_key("x")[1],
                             max_retries=0)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.create(model="gpt", input="hi", previous_response_id=made.id)


def test_store_false_keeps_nothing(client):
    made = client.responses.create(model="gpt", input="forget me", store=False)

    assert made.store is False and not StoredResponse.objects.filter(pk=made.id).exists()


def test_a_refusal_comes_back_as_a_refusal_part(client):
    response = client.responses.create(model="careful", input="something bad")

    (message,) = response.output
    assert message.content[0].type == "refusal" and message.content[0].refusal


@pytest.mark.parametrize(("fields", "param"), [
    ({"input": 5}, "input"),
    ({"input": [{"role": {"x": 1}, "content": "hi"}]}, "input[0].role"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "hi", "background": True}, "background"),
    ({"input": "hi", "text": {"format": {"type": "xml"}}}, "text.format"),
])
def test_what_cannot_be_served_gets_400_naming_the_field(client, fields, param):
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="gpt", **fields)
    assert refused.value.body["param"] == param
