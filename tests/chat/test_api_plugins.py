"""The plugin chain on ``/v1/chat/completions`` against the live server: a blocked
request, a masked answer (whole and streamed), hybrid mode's promise that a request
with personal data never reaches a model outside the installation — and API traffic
passed through unchanged unless an operator scoped a plugin to it."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from django.core.management import call_command

from plugins.models import Plugin
from routing.keys import create_key
from routing.models import ModelEndpoint, RoutingRule

pytestmark = pytest.mark.django_db(transaction=True)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=create_key("plugins")[1],
                         max_retries=0, timeout=20)


def test_sensitive_word_blocks_the_request_with_400(live_server_url, openai_server):
    ModelEndpoint.objects.create(name="chat", engine="openai", endpoint_url=openai_server.url,
                                 upstream_model="echo")
    Plugin.objects.create(name="sensitive_words", order=1, all_api=True,
                          config={"words": ["forbidden"], "mode": "block"})

    with pytest.raises(openai.BadRequestError) as refused:
        client(live_server_url).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "say FORBIDDEN things"}])

    assert refused.value.code == "content_blocked"
    assert "sensitive_words" in str(refused.value) or refused.value.message


def test_sensitive_word_is_masked_in_whole_and_streamed_answers(live_server_url,
                                                                openai_server):
    ModelEndpoint.objects.create(name="chat", engine="openai", endpoint_url=openai_server.url,
                                 upstream_model="echo")
    Plugin.objects.create(name="sensitive_words", order=1, all_api=True,
                          config={"words": ["secret"], "mode": "mask", "apply_to": "output"})
    api = client(live_server_url)
    messages = [{"role": "user", "content": "the secret word"}]

    whole = api.chat.completions.create(model="chat", messages=messages)
    streamed = "".join(c.choices[0].delta.content or ""
                       for c in api.chat.completions.create(model="chat", messages=messages,
                                                            stream=True) if c.choices)

    assert whole.choices[0].message.content == "echo: the ****** word"
    assert streamed == "echo: the ****** word"


def test_hybrid_mode_sends_personal_data_to_local_models_only(live_server_url,
                                                              openai_server):
    # "cloud" is a public host name: it must never be tried, even as the fallback.
    ModelEndpoint.objects.create(name="cloud", engine="openai",
                                 endpoint_url="https://api.example.com/v1", upstream_model="x")
    ModelEndpoint.objects.create(name="local", engine="openai", endpoint_url=openai_server.url,
                                 upstream_model="echo")
    RoutingRule.objects.create(name="default", priority=100, condition={}, target_model="cloud",
                               fallbacks=["local"])
    Plugin.objects.create(name="pii_redaction", order=1, all_api=True,
                          config={"redact": False, "hybrid_mode": True})
    api = client(live_server_url)

    raw = api.chat.completions.with_raw_response.create(
        model="cloud", messages=[{"role": "user", "content": "mail me at ann@example.org"}])

    assert raw.headers["x-openclaw-model"] == "local"
    assert raw.parse().choices[0].message.content == "echo: mail me at ann@example.org"

    ModelEndpoint.objects.filter(name="local").delete()
    with pytest.raises(openai.PermissionDeniedError) as refused:
        api.chat.completions.create(
            model="cloud", messages=[{"role": "user", "content": "ann@example.org"}])
    assert refused.value.code == "no_local_model"


def test_the_demo_plugins_pass_api_traffic_through_unchanged(live_server_url, openai_server):
    call_command("loaddata", str(FIXTURES / "40_plugins.json"), verbosity=0)
    ModelEndpoint.objects.create(name="chat", engine="openai", endpoint_url=openai_server.url,
                                 upstream_model="echo")
    sent = [{"role": "user", "content": "mail the badword list to jo@example.com"}]

    answer = client(live_server_url).chat.completions.create(model="chat", messages=sent)

    (received,) = openai_server.requests_for("echo")
    assert received.body["messages"] == sent
    assert answer.choices[0].message.content == "echo: " + sent[0]["content"]


def test_a_plugin_scoped_to_a_key_runs_for_that_key_only(live_server_url, openai_server):
    ModelEndpoint.objects.create(name="chat", engine="openai", endpoint_url=openai_server.url,
                                 upstream_model="echo")
    key, secret = create_key("scoped")
    Plugin.objects.create(name="system_prompt", config={"template": "Hi {user}."},
                          in_studio=False).api_keys.add(key)
    scoped = openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=secret, max_retries=0)
    messages = [{"role": "user", "content": "hello"}]

    scoped.chat.completions.create(model="chat", messages=messages)
    client(live_server_url).chat.completions.create(model="chat", messages=messages)

    with_prompt, without = (r.body["messages"] for r in openai_server.requests_for("echo"))
    assert with_prompt == [{"role": "system", "content": "Hi the user."}, *messages]
    assert without == messages
