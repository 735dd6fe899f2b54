"""Workflows through ``/v1/chat/completions`` with the official ``openai`` SDK against
the live web server: ``model: "workflow/<slug>"`` (whole and streamed), continuing a
conversation by id, human approval and its resume, and refusals in OpenAI's shape."""

from __future__ import annotations

import openai
import pytest

from chat.models import Message, Workflow
from routing.keys import create_key
from routing.models import ModelEndpoint

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sdk(live_server_url, openai_server) -> openai.OpenAI:
    ModelEndpoint.objects.create(name="recorded", engine="openai", upstream_model="echo",
                                 endpoint_url=openai_server.url)
    return openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=create_key("wf")[1],
                         max_retries=0, timeout=30)


def answering(slug: str, *, approval: bool = False) -> Workflow:
    nodes = [{"id": "recall", "type": "memory_recall", "config": {"long_term": False}},
             {"id": "answer", "type": "llm"}, {"id": "store", "type": "memory_write"}]
    edges = [{"source": "recall", "target": "answer"}, {"source": "answer", "target": "store"}]
    if approval:
        nodes.insert(2, {"id": "review", "type": "human_approval"})
        edges[1:] = [{"source": "answer", "target": "review"},
                     {"source": "review", "target": "store"}]
    return Workflow.objects.create(slug=slug, name=slug, default_model="recorded",
                                   definition={"nodes": nodes, "edges": edges})


def test_workflow_model_answers_and_the_conversation_goes_on_by_id(sdk, openai_server):
    answering("plain")

    raw = sdk.chat.completions.with_raw_response.create(
        model="workflow/plain", messages=[{"role": "user", "content": "first question"}])
    completion = raw.parse()
    conversation = raw.headers["x-openclaw-conversation"]
    again = sdk.chat.completions.with_raw_response.create(
        model="workflow/plain", messages=[{"role": "user", "content": "second question"}],
        extra_headers={"X-OpenClaw-Conversation": conversation})

    assert completion.choices[0].message.content == "echo: first question"
    assert completion.model == "recorded" and raw.headers["x-openclaw-model"] == "recorded"
    assert raw.headers["x-openclaw-route"].startswith("direct; instance=")
    assert float(raw.headers["x-openclaw-overhead-ms"]) >= 0
    assert again.headers["x-openclaw-conversation"] == conversation
    # the conversation kept the history: the model saw both turns
    sent = [m["content"] for m in openai_server.requests[-1].body["messages"]
            if m["role"] == "user"]
    assert sent == ["first question", "second question"]
    assert Message.objects.filter(conversation_id=conversation).count() == 4


def test_workflow_streams_tokens_in_openai_chunks(sdk):
    answering("streamed")

    stream = sdk.chat.completions.create(
        model="workflow/streamed", stream=True,
        messages=[{"role": "user", "content": "stream these words"}],
        stream_options={"include_usage": True})
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream these words"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    assert finish == "stop" and chunks[-1].usage.completion_tokens == 4


def test_approval_waits_then_resumes_through_metadata(sdk):
    answering("checked", approval=True)

    waiting = sdk.chat.completions.create(
        model="workflow/checked", messages=[{"role": "user", "content": "may I"}])
    extension = waiting.model_extra["x_openclaw"]
    resumed = sdk.chat.completions.create(
        model="workflow/checked", messages=[{"role": "user", "content": "(resume)"}],
        extra_body={"metadata": {"conversation_id": extension["conversation_id"],
                                 "resume": {"action": "edit", "content": "yes you may"}}})

    assert waiting.choices[0].finish_reason == "interrupted"
    assert extension["status"] == "waiting"
    assert extension["interrupts"][0]["value"]["reply"] == "echo: may I"
    assert resumed.choices[0].message.content == "yes you may"


def test_unknown_workflow_and_foreign_conversation_are_refused(sdk):
    answering("mine")
    done = sdk.chat.completions.with_raw_response.create(
        model="workflow/mine", messages=[{"role": "user", "content": "hi"}])
    other = openai.OpenAI(base_url=str(sdk.base_url), api_key=create_key("other")[1],
                          max_retries=0, timeout=30)

    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="workflow/nope",
                                    messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError) as foreign:
        other.chat.completions.create(
            model="recorded", messages=[{"role": "user", "content": "let me in"}],
            extra_headers={"X-OpenClaw-Conversation": done.headers["x-openclaw-conversation"]})

    assert missing.value.code == "workflow_not_found"
    assert foreign.value.code == "conversation_not_found"


def test_a_keys_new_conversations_run_the_workflow_that_lists_it(live_server_url,
                                                                  openai_server):
    ModelEndpoint.objects.create(name="recorded", engine="openai", upstream_model="echo",
                                 endpoint_url=openai_server.url)
    key, secret = create_key("listed")
    answering("for-key", approval=True).api_keys.add(key)
    sdk = openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=secret, max_retries=0,
                        timeout=30)

    # a new server-side conversation (metadata without an id), naming a plain model
    completion = sdk.chat.completions.create(
        model="recorded", messages=[{"role": "user", "content": "new topic"}],
        extra_body={"metadata": {"conversation_id": None}})

    assert completion.choices[0].finish_reason == "interrupted"
    waiting = completion.model_extra["x_openclaw"]
    assert waiting["interrupts"][0]["value"]["reply"] == "echo: new topic"
