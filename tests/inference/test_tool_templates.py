"""Prompts with tools, rendered by the tiny test tokenizer (tests/tiny_models.py: its
own chat template knows nothing of tools, so the vendored template of the
endpoint's tool format is used), and a model's own tool-aware template preferred."""

from __future__ import annotations

import pytest

from inference.tool_parsing import HermesParser, Llama3JsonParser
from inference.tool_templates import (
    own_template_knows_tools,
    template_messages,
    tool_prompt_ids,
    tool_prompt_text,
    uses_tool_template,
)
from tests.tiny_models import build_tokenizer

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 °C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "rain, 14 °C"},
]
TOOL_AWARE_TEMPLATE = (
    "{% for tool in tools or [] %}TOOL {{ tool.function.name }}\n{% endfor %}"
    "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def test_hermes_prompt_lists_the_tools_and_shows_calls_and_results(tokenizer):
    prompt = tool_prompt_text(tokenizer, CONVERSATION, TOOLS, "hermes")

    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n")
    assert ('<tools>\n{"name": "get_weather", "description": "The weather in a city", '
            '"parameters": {"type": "object"') in prompt
    assert "<tool_call></tool_call>" in prompt  # the instruction
    assert ('<|im_start|>user\nWeather in Paris and Rome?<|im_end|>\n'
            '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": '
            '{"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", '
            '"arguments": {"city": "Rome"}}\n</tool_call><|im_end|>\n') in prompt
    # both results in one user turn
    assert ("<|im_start|>user\n<tool_response>\nsunny, 21 °C\n</tool_response>\n"
            "<tool_response>\nrain, 14 °C\n</tool_response><|im_end|>\n") in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_hermes_calls_in_the_prompt_read_back_with_the_hermes_parser(tokenizer):
    prompt = tool_prompt_text(tokenizer, CONVERSATION, TOOLS, "hermes")
    answer = prompt.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]

    _content, calls = HermesParser.parse(answer)

    assert [c["function"]["arguments"] for c in calls] == ['{"city": "Paris"}',
                                                           '{"city": "Rome"}']


def test_llama3_json_prompt_lists_the_tools_and_results_come_as_ipython(tokenizer):
    prompt = tool_prompt_text(tokenizer, CONVERSATION, TOOLS, "llama3_json")

    assert prompt.startswith("<s><|start_header_id|>system<|end_header_id|>\n\n")
    assert '"parameters": {<argument name>: <value>}' in prompt
    assert '{\n    "name": "get_weather",\n    "description": "The weather in a city"' in prompt
    assert "Be brief.<|eot_id|>" in prompt
    calls = ('<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", '
             '"parameters": {"city": "Paris"}}; {"name": "get_weather", "parameters": '
             '{"city": "Rome"}}<|eot_id|>')
    assert calls in prompt
    assert Llama3JsonParser.parse(calls.split("\n\n")[1].removesuffix("<|eot_id|>"))[1]
    assert ("<|start_header_id|>ipython<|end_header_id|>\n\nsunny, 21 °C<|eot_id|>"
            "<|start_header_id|>ipython<|end_header_id|>\n\nrain, 14 °C<|eot_id|>") in prompt
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_without_tools_the_vendored_template_still_shows_the_tool_turns(tokenizer):
    prompt = tool_prompt_text(tokenizer, CONVERSATION, None, "hermes")

    assert "<tools>" not in prompt
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert "<tool_response>\nsunny, 21 °C\n</tool_response>" in prompt


def test_token_ids_are_those_of_the_text(tokenizer):
    ids = tool_prompt_ids(tokenizer, CONVERSATION, TOOLS, "hermes")

    assert tokenizer.decode(ids) == tool_prompt_text(tokenizer, CONVERSATION, TOOLS, "hermes")


def test_a_model_template_that_knows_tools_is_used_instead(tmp_path):
    own = build_tokenizer(tmp_path)
    own.chat_template = TOOL_AWARE_TEMPLATE

    prompt = tool_prompt_text(own, CONVERSATION[:2], TOOLS, "hermes")

    assert own_template_knows_tools(own)
    assert prompt == "TOOL get_weather\nsystem: Be brief.\nuser: Weather in Paris and Rome?\n"


def test_messages_for_templates_have_text_content_and_argument_objects():
    turns = template_messages(CONVERSATION)

    assert turns[1]["content"] == "Weather in Paris and Rome?"
    assert turns[2]["content"] == ""
    assert turns[2]["tool_calls"][0]["function"] == {"name": "get_weather",
                                                      "arguments": {"city": "Paris"}}
    assert turns[3]["tool_call_id"] == "call_1"


@pytest.mark.parametrize(("tool_format", "messages", "tools", "expected"), [
    ("", CONVERSATION, TOOLS, False),  # no format: the endpoint's usual template
    ("hermes", CONVERSATION[:2], None, False),  # a plain chat: the model's own template
    ("hermes", CONVERSATION[:2], TOOLS, True),
    ("llama3_json", CONVERSATION, None, True),  # tool turns to show
])
def test_when_the_tool_template_is_used(tool_format, messages, tools, expected):
    assert uses_tool_template(tool_format, messages, tools) is expected


def test_tiny_tokenizer_template_knows_no_tools(tokenizer):
    assert not own_template_knows_tools(tokenizer)
