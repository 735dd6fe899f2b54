"""A tool call made by a worker-hosted local engine reaches the official ``openai``
client: the live web server (``tests/chat/conftest.py``) routes the request to a real
Celery worker process on the ``gpu`` queue, whose engine renders the tools into the
prompt, reads the call out of the generated text and streams it back over the
channel layer; the client sees ``delta.tool_calls`` and ``finish_reason
"tool_calls"``, streamed and not.

TensorRT-LLM needs an NVIDIA GPU, which this machine lacks, so the worker imports the
stand-in of its documented LLM API (``tests/stand_ins/tensorrt_llm``) instead of the
library; the engine adapter, the tool template and the parser are the real ones. The
stand-in answers with the words of its prompt, so a user message holding a
``<tool_call>`` block makes the "model" answer with that call.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import openai
import pytest

from routing.keys import create_key
from routing.models import ModelEndpoint
from tests.chat.conftest import live_server_url  # noqa: F401 - the live web server fixture

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STAND_INS = Path(__file__).resolve().parents[1] / "stand_ins"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
QUESTION = [{"role": "user", "content": 'What is the weather in Paris? <tool_call>{"name": '
                                        '"get_weather", "arguments": {"city": "Paris"}}'
                                        '</tool_call>'}]


@pytest.fixture
def client(live_server_url, start_worker, tmp_path) -> openai.OpenAI:  # noqa: F811
    ModelEndpoint.objects.create(name="local-trt", engine="tensorrt_llm",
                                 model_path=str(tmp_path), gpu_id=0, tool_format="hermes",
                                 max_output_tokens=64, first_byte_timeout=60,
                                 total_timeout=120)
    start_worker(queues="gpu", concurrency=1, env={
        "PYTHONPATH": f"{STAND_INS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "TRTLLM_STAND_IN_RECORD": str(tmp_path / "apply_chat_template.jsonl")})
    return openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=create_key("tools")[1],
                         max_retries=0, timeout=60)


def template_calls(tmp_path: Path) -> list[dict]:
    """What the worker's stand-in tokenizer was asked, one call per request."""
    return [json.loads(line)
            for line in (tmp_path / "apply_chat_template.jsonl").read_text().splitlines()]


def test_local_engine_tool_call_reaches_the_openai_client_streamed_and_whole(client, tmp_path):
    # when: the same question, streamed and not
    chunks = list(client.chat.completions.create(model="local-trt", messages=QUESTION,
                                                 tools=TOOLS, stream=True))
    whole = client.chat.completions.create(model="local-trt", messages=QUESTION, tools=TOOLS)

    # then: streamed, the text before the call, the call as delta.tool_calls, then the finish
    choices = [chunk.choices[0] for chunk in chunks if chunk.choices]
    content = "".join(choice.delta.content or "" for choice in choices)
    fragments = [call for choice in choices for call in choice.delta.tool_calls or []]
    assert content == "What is the weather in Paris?"
    assert [(f.index, f.type, f.function.name) for f in fragments] == [
        (0, "function", "get_weather")]
    assert fragments[0].id.startswith("call_")
    assert json.loads(fragments[0].function.arguments) == {"city": "Paris"}
    assert [c.finish_reason for c in choices if c.finish_reason] == ["tool_calls"]
    # and whole: message.tool_calls
    [call] = whole.choices[0].message.tool_calls
    assert (call.type, call.function.name) == ("function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert whole.choices[0].finish_reason == "tool_calls"
    assert whole.usage.completion_tokens == 11  # the words: 6 of the question, 5 of the call
    # and the worker's tokenizer was given the tools and the Hermes template
    asked = template_calls(tmp_path)
    assert len(asked) == 2
    assert all(a["tools"] == TOOLS and "<tools>" in a["chat_template"] for a in asked)


def test_a_forced_tool_call_is_refused_with_a_400_naming_tool_choice(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="local-trt", messages=QUESTION, tools=TOOLS,
                                       tool_choice="required")

    assert refused.value.status_code == 400
    assert refused.value.param == "tool_choice"
    assert "cannot force a tool call" in refused.value.message
