"""The echo engine: the wiring check streams the last user message back."""

from inference.engines.base import ChatRequest, EndpointConfig
from inference.registry import build_engine, registered_kinds


def echo(**params) -> object:
    return build_engine(EndpointConfig(id=None, name="echo", engine="echo", params=params))


async def test_echo_streams_the_last_user_message_word_by_word():
    request = ChatRequest(messages=[{"role": "system", "content": "be nice"},
                                    {"role": "user", "content": "hello there world"}])

    deltas = [d async for d in echo().stream(request)]

    assert [d.text for d in deltas[:-1]] == ["hello ", "there ", "world"]
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage.completion_tokens == 3
    assert deltas[-1].usage.prompt_tokens == 5


async def test_echo_stops_at_max_tokens_with_finish_reason_length():
    completion = await echo().generate(
        ChatRequest(messages=[{"role": "user", "content": "one two three"}], max_tokens=2))

    assert completion.text == "one two "
    assert completion.finish_reason == "length"


def test_echo_and_openai_kinds_are_registered_at_start_up():
    assert {"echo", "openai", "vllm"} <= set(registered_kinds())
