"""A prompt longer than a model's context window, as a client meets it: 400
``context_length_exceeded`` naming the model, its window and the tokens needed — and
a context-window fallback rule whose model has no instance falls back to the model
asked for rather than answering 404 for the model the client named."""

from __future__ import annotations

import openai
import pytest

from routing import rules
from routing.keys import create_key
from routing.models import ModelEndpoint, RoutingRule

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(live_server_url, openai_server) -> openai.OpenAI:
    ModelEndpoint.objects.create(name="small", engine="openai", endpoint_url=openai_server.url,
                                 upstream_model="echo", context_window=300)
    return openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=create_key("ctx")[1],
                         max_retries=0, timeout=20)


def words(n: int) -> list[dict]:
    return [{"role": "user", "content": "word " * n}]


@pytest.mark.parametrize("stream", [False, True])
def test_an_overlong_prompt_is_400_naming_the_model_and_the_numbers(client, stream):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="small", messages=words(2000), max_tokens=50,
                                       stream=stream)

    assert refused.value.code == "context_length_exceeded"
    message = refused.value.body["message"]
    assert "“small” (300 tokens)" in message and "max_tokens 50" in message


def test_a_context_rule_without_instances_falls_back_to_the_model_asked_for(client):
    RoutingRule.objects.create(name="Long context", priority=20, target_model="cloud-32k",
                               condition={"field": "context_length", "op": "gt",
                                          "value": 100})
    rules.clear_local_copy()

    fits = client.chat.completions.with_raw_response.create(model="small", messages=words(150))
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model="small", messages=words(2000))

    assert fits.headers["x-openclaw-model"] == "small"
    assert too_long.value.code == "context_length_exceeded"
    assert "“small” (300 tokens)" in too_long.value.body["message"]


def test_a_rule_to_a_model_without_instances_names_it(client):
    RoutingRule.objects.create(name="Redirect", priority=20, target_model="nowhere",
                               condition={"field": "model", "op": "eq", "value": "small"})
    rules.clear_local_copy()

    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="small", messages=words(3))

    assert "“nowhere”" in missing.value.body["message"]
