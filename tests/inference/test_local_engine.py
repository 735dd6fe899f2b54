"""What the local engines (transformers, ONNX, TensorRT-LLM) accept of a request with
tools: nothing without a tool format; with one, ``tools`` and ``tool_choice`` "auto"
or "none", never a forced call. The refusals are 400s naming the field."""

from __future__ import annotations

import pytest

from inference.engines.base import ChatRequest, EndpointConfig
from inference.engines.local import LocalEngine
from inference.errors import Unsupported
from inference.registry import engine_class

LOCAL_KINDS = ["transformers", "onnx", "tensorrt_llm"]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]


def check(kind: str, tool_format: str = "", **extra) -> None:
    config = EndpointConfig(id=None, name="local", engine=kind, path="/models/x",
                            tool_format=tool_format)
    engine_class(kind).check_request(config, ChatRequest(
        messages=[{"role": "user", "content": "weather?"}], extra=extra))


@pytest.mark.parametrize("kind", LOCAL_KINDS)
def test_local_engines_share_the_local_base(kind):
    assert issubclass(engine_class(kind), LocalEngine)


@pytest.mark.parametrize("kind", LOCAL_KINDS)
def test_tools_are_refused_without_a_tool_format(kind):
    with pytest.raises(Unsupported, match="“tools” is not supported") as refused:
        check(kind, tools=TOOLS)

    assert refused.value.param == "tools"
    assert refused.value.http_status == 400


@pytest.mark.parametrize("kind", LOCAL_KINDS)
@pytest.mark.parametrize("tool_format", ["hermes", "llama3_json"])
@pytest.mark.parametrize("choice", [None, "auto", "none"])
def test_tools_are_honoured_with_a_tool_format(kind, tool_format, choice):
    check(kind, tool_format, tools=TOOLS, tool_choice=choice, parallel_tool_calls=False)


@pytest.mark.parametrize("kind", LOCAL_KINDS)
@pytest.mark.parametrize("choice", ["required",
                                    {"type": "function", "function": {"name": "get_weather"}}])
def test_a_forced_tool_call_is_refused_naming_tool_choice(kind, choice):
    with pytest.raises(Unsupported, match="cannot force a tool call") as refused:
        check(kind, "hermes", tools=TOOLS, tool_choice=choice)

    assert refused.value.param == "tool_choice"


def test_an_unknown_tool_format_honours_no_tools():
    with pytest.raises(Unsupported) as refused:
        check("transformers", "mistral", tools=TOOLS)

    assert refused.value.param == "tools"


def test_other_fields_stay_refused_with_a_tool_format():
    with pytest.raises(Unsupported) as refused:
        check("onnx", "hermes", tools=TOOLS, logprobs=True)

    assert refused.value.param == "logprobs"


def test_the_openai_engine_still_forwards_a_forced_call():
    config = EndpointConfig(id=None, name="cloud", engine="openai", url="http://x/v1")

    engine_class("openai").check_request(config, ChatRequest(
        messages=[], extra={"tools": TOOLS, "tool_choice": "required"}))
