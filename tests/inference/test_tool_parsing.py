"""Tool calls read out of local models' text: the Hermes and Llama 3.1 JSON parsers on
generations recorded as those models write them, whole and streamed cut at every
position, and ``with_tool_calls`` turning an engine's text stream into OpenAI's
tool-call deltas."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from inference.engines.base import Assembler, ChatRequest, Delta, EndpointConfig, Usage
from inference.tool_parsing import (
    PARSERS,
    HermesParser,
    Llama3JsonParser,
    ToolParser,
    tools_in_play,
    with_tool_calls,
)

# -- generations as the models write them (Qwen 2.5 / Hermes 2 Pro, Llama 3.1 Instruct) --

HERMES_ONE = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", '
              '"unit": "celsius"}}\n</tool_call>')
HERMES_TWO = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
              '</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": '
              '{"city": "Tokyo"}}\n</tool_call>')
HERMES_TEXT_FIRST = ("I'll look up the flights for you.\n\n<tool_call>\n"
                     '{"name": "search_flights", "arguments": {"from": "CDG", "to": "NRT", '
                     '"date": "2026-12-24", "passengers": 2}}\n</tool_call>')
HERMES_MALFORMED = ('Checking.\n<tool_call>\n{"name": "get_weather", "arguments": '
                    '{"city": "Paris"}\n</tool_call>')
HERMES_NAMELESS = '<tool_call>\n{"arguments": {"city": "Paris"}}\n</tool_call>'
HERMES_UNCLOSED = '<tool_call>\n{"name": "get_time", "arguments": {"timezone": "Europe/Paris"}}\n'
HERMES_TRUNCATED = '<tool_call>\n{"name": "get_time", "arguments": {"timez'
HERMES_PLAIN = "Paris is the capital of France. Use <b> for bold, and 3 < 4."

LLAMA_ONE = '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}'
LLAMA_TAGGED = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}'
LLAMA_SEVERAL = ('{"name": "get_weather", "parameters": {"city": "Paris"}}; '
                 '{"name": "get_time", "parameters": {"timezone": "Asia/Tokyo"}}')
LLAMA_PLAIN = "The weather in Paris is sunny, 21 °C."
LLAMA_BRACE_TEXT = '{"temperature": 21, "sky": "clear"} is what the service returned.'
LLAMA_BROKEN = '{"name": "get_weather", "parameters": {"city": "Paris"}'

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


def named(calls: list[dict]) -> list[tuple[str, dict]]:
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


def streamed(parser_class: type[ToolParser], pieces: list[str]) -> tuple[str, list[dict]]:
    parser = parser_class()
    content = "".join(parser.feed(piece) for piece in pieces)
    rest, calls = parser.finish()
    return content + rest, calls


# -- Hermes ------------------------------------------------------------------------------


def test_hermes_one_call_is_a_call_with_no_content():
    content, calls = HermesParser.parse(HERMES_ONE)

    assert content is None
    assert named(calls) == [("get_weather", {"city": "Paris", "unit": "celsius"})]
    assert calls[0]["id"].startswith("call_") and calls[0]["type"] == "function"


def test_hermes_two_calls_get_their_own_ids():
    content, calls = HermesParser.parse(HERMES_TWO)

    assert content is None
    assert named(calls) == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Tokyo"})]
    assert calls[0]["id"] != calls[1]["id"]


def test_hermes_text_before_a_call_is_the_content():
    content, calls = HermesParser.parse(HERMES_TEXT_FIRST)

    assert content == "I'll look up the flights for you."
    assert named(calls) == [("search_flights", {"from": "CDG", "to": "NRT",
                                                "date": "2026-12-24", "passengers": 2})]


@pytest.mark.parametrize("text", [HERMES_MALFORMED, HERMES_NAMELESS, HERMES_TRUNCATED,
                                  HERMES_PLAIN])
def test_hermes_block_that_is_not_a_call_stays_text(text):
    assert HermesParser.parse(text) == (text, [])


def test_hermes_block_left_open_at_the_end_is_a_call_when_whole():
    assert named(HermesParser.parse(HERMES_UNCLOSED)[1]) == [
        ("get_time", {"timezone": "Europe/Paris"})]


def test_hermes_arguments_written_as_a_json_string_are_read():
    text = '<tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call>'

    assert named(HermesParser.parse(text)[1]) == [("f", {"x": 1})]


@pytest.mark.parametrize("text", [HERMES_TEXT_FIRST, HERMES_TWO, HERMES_MALFORMED,
                                  HERMES_PLAIN, HERMES_UNCLOSED])
def test_hermes_streamed_cut_at_every_position_equals_the_whole(text):
    content, calls = HermesParser.parse(text)

    for cut in range(len(text) + 1):
        got_content, got_calls = streamed(HermesParser, [text[:cut], text[cut:]])
        assert (got_content or None, named(got_calls)) == (content, named(calls)), cut
    one_by_one = streamed(HermesParser, list(text))
    assert (one_by_one[0] or None, named(one_by_one[1])) == (content, named(calls))


def test_hermes_never_sends_part_of_a_tag_before_the_call():
    parser = HermesParser()
    sent = []

    for character in HERMES_TEXT_FIRST:
        sent.append(parser.feed(character))

    assert "<" not in "".join(sent)
    assert "".join(sent) == "I'll look up the flights for you."


def test_hermes_text_streams_as_it_comes_without_a_call():
    parser = HermesParser()

    assert parser.feed("Paris is") == "Paris is"
    assert parser.feed(" the capital <") == " the capital"  # "<" may open a <tool_call>
    assert parser.feed("b> tag\n") == " <b> tag"  # the newline waits for what follows
    assert parser.finish() == ("\n", [])


# -- Llama 3.1 JSON ----------------------------------------------------------------------


def test_llama_json_call_uses_parameters():
    content, calls = Llama3JsonParser.parse(LLAMA_ONE)

    assert content is None
    assert named(calls) == [("get_weather", {"city": "Paris", "unit": "celsius"})]


def test_llama_json_call_after_the_python_tag():
    assert named(Llama3JsonParser.parse(LLAMA_TAGGED)[1]) == [("get_weather", {"city": "Paris"})]


def test_llama_json_calls_separated_by_semicolons():
    content, calls = Llama3JsonParser.parse(LLAMA_SEVERAL)

    assert content is None
    assert named(calls) == [("get_weather", {"city": "Paris"}),
                            ("get_time", {"timezone": "Asia/Tokyo"})]


@pytest.mark.parametrize("text", [LLAMA_PLAIN, LLAMA_BRACE_TEXT, LLAMA_BROKEN])
def test_llama_json_text_stays_text(text):
    assert Llama3JsonParser.parse(text) == (text, [])


def test_llama_json_plain_text_streams_at_once_and_json_is_held():
    plain, json_like = Llama3JsonParser(), Llama3JsonParser()

    assert plain.feed("The weather") == "The weather"
    assert plain.feed(" is") == " is"
    assert json_like.feed('{"temperature": 21,') == ""
    assert json_like.feed(' "sky": "clear"} is it.') == ""
    assert json_like.finish() == ('{"temperature": 21, "sky": "clear"} is it.', [])


@pytest.mark.parametrize("text", [LLAMA_TAGGED, LLAMA_SEVERAL, LLAMA_BRACE_TEXT, LLAMA_PLAIN])
def test_llama_json_streamed_cut_at_every_position_equals_the_whole(text):
    content, calls = Llama3JsonParser.parse(text)

    for cut in range(len(text) + 1):
        got_content, got_calls = streamed(Llama3JsonParser, [text[:cut], text[cut:]])
        assert (got_content or None, named(got_calls)) == (content, named(calls)), cut


def test_parsers_are_registered_by_name():
    assert PARSERS == {"hermes": HermesParser, "llama3_json": Llama3JsonParser}


# -- with_tool_calls -----------------------------------------------------------------------


def config(tool_format: str = "hermes") -> EndpointConfig:
    return EndpointConfig(id=None, name="local", engine="transformers", tool_format=tool_format)


def request(**extra) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": "weather?"}],
                       extra={"tools": TOOLS, **extra})


class Generation:
    """An engine's stream: one delta per piece, then the finish with the usage."""

    def __init__(self, pieces: list[str], finish: str = "stop"):
        self.pieces, self.finish = pieces, finish
        self.closed = False

    async def __call__(self) -> AsyncIterator[Delta]:
        try:
            for piece in self.pieces:
                yield Delta(text=piece, tokens=1)
            yield Delta(finish_reason=self.finish, usage=Usage(12, len(self.pieces)))
        finally:
            self.closed = True


def words(text: str) -> list[str]:
    return [text[i:i + 7] for i in range(0, len(text), 7)]  # cuts inside tags and JSON


async def run(deltas: AsyncIterator[Delta]) -> list[Delta]:
    return [delta async for delta in deltas]


async def test_a_stream_with_calls_sends_text_then_each_call_then_tool_calls():
    pieces = words(HERMES_TEXT_FIRST + "\n" + HERMES_ONE)

    out = await run(with_tool_calls(config(), request(), Generation(pieces)()))

    texts = [d for d in out if d.text]
    calls = [d.tool_calls[0] for d in out if d.tool_calls]
    assert "".join(d.text for d in texts) == "I'll look up the flights for you."
    assert out.index(texts[-1]) < out.index(next(d for d in out if d.tool_calls))
    assert [c["index"] for c in calls] == [0, 1]
    assert [(c["function"]["name"], c["type"]) for c in calls] == [
        ("search_flights", "function"), ("get_weather", "function")]
    assert all(c["id"].startswith("call_") for c in calls)
    assert json.loads(calls[1]["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert out[-1].finish_reason == "tool_calls"
    assert out[-1].usage == Usage(12, len(pieces))
    assert sum(d.tokens for d in out) == len(pieces)


async def test_assembled_stream_is_a_completion_with_tool_calls():
    assembler = Assembler()
    for delta in await run(with_tool_calls(config(), request(), Generation(words(HERMES_TWO))())):
        assembler.add(delta)

    completion = assembler.completion()

    assert completion.finish_reason == "tool_calls"
    assert completion.choices[0].text is None
    assert named(completion.tool_calls) == [("get_weather", {"city": "Paris"}),
                                            ("get_weather", {"city": "Tokyo"})]


async def test_parallel_tool_calls_false_keeps_the_first_call():
    out = await run(with_tool_calls(config(), request(parallel_tool_calls=False),
                                    Generation(words(HERMES_TWO))()))

    assert [named(d.tool_calls) for d in out if d.tool_calls] == [
        [("get_weather", {"city": "Paris"})]]


async def test_llama_json_stream_gives_its_calls_at_the_end():
    out = await run(with_tool_calls(config("llama3_json"), request(),
                                    Generation(words(LLAMA_SEVERAL))()))

    assert not any(d.text for d in out)
    assert [named(d.tool_calls) for d in out if d.tool_calls] == [
        [("get_weather", {"city": "Paris"})], [("get_time", {"timezone": "Asia/Tokyo"})]]
    assert out[-1].finish_reason == "tool_calls"


async def test_text_without_a_call_keeps_its_finish_reason():
    out = await run(with_tool_calls(config(), request(),
                                    Generation(words(HERMES_MALFORMED), "length")()))

    assert "".join(d.text for d in out) == HERMES_MALFORMED
    assert not any(d.tool_calls for d in out)
    assert out[-1].finish_reason == "length"


@pytest.mark.parametrize(("tool_format", "extra"), [
    ("", {}), ("hermes", {"tool_choice": "none"}), ("hermes", {"tools": []})])
async def test_stream_is_untouched_when_tools_are_not_in_play(tool_format, extra):
    deltas = Generation(words(HERMES_ONE))()

    assert with_tool_calls(config(tool_format), request(**extra), deltas) is deltas
    assert tools_in_play(config(tool_format), request(**extra)) is None


async def test_closing_the_stream_early_closes_the_engines_stream():
    generation = Generation(words(HERMES_TEXT_FIRST))
    stream = with_tool_calls(config(), request(), generation())

    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]  # an async generator

    assert generation.closed
