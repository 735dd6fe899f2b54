"""Tool calls found in a local model's text, as vLLM's tool parsers find them.

A local engine (transformers, ONNX, TensorRT-LLM) gets text from its model, not
structured calls: the endpoint's ``tool_format`` names the convention the model
was trained on, and the parser of that name (``PARSERS``) reads the calls out
of the text:

    hermes        <tool_call>{"name": "f", "arguments": {...}}</tool_call>, one block a call,
                  text before (and between) the blocks is the answer's content
    llama3_json   the whole answer is {"name": "f", "parameters": {...}} (optionally after
                  <|python_tag|>), several calls separated by ";"

A parser is fed the text as it streams and gives back the content that is safe
to send now: it holds back what may still turn out to be a call (a partial
``<tool_call>``; for Llama 3.1 an answer that starts with ``{``). At the end it
gives the rest of the content and the calls. A block that is not valid JSON,
or names no function, stays text: a client never gets half a call.

:func:`with_tool_calls` applies a parser to an engine's delta stream.
"""

from __future__ import annotations

import abc
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from .engines.base import ChatRequest, Delta, EndpointConfig

TOOL_FIELDS = frozenset({"tools", "tool_choice"})  # what a tool format lets an engine honour
HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
_SEPARATORS = " \t\r\n;"  # between Llama 3.1 JSON calls


def tools_in_play(config: EndpointConfig, request: ChatRequest) -> list[dict[str, Any]] | None:
    """The request's tools when this endpoint prompts with them and parses calls: it has
    a known tool format, the request has tools, and ``tool_choice`` is not "none"."""
    tools = request.extra.get("tools")
    if config.tool_format not in PARSERS or not tools or not isinstance(tools, list):
        return None
    if request.extra.get("tool_choice") == "none":
        return None
    return tools


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def as_call(value: Any) -> dict[str, Any] | None:
    """An OpenAI tool call from a decoded ``{"name", "arguments" | "parameters"}`` object;
    None when it is not one (no name, arguments that are not an object)."""
    if not isinstance(value, dict):
        return None
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    arguments = value.get("arguments", value.get("parameters"))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return None
    return {"id": new_call_id(), "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def _call_from_json(text: str) -> dict[str, Any] | None:
    try:
        return as_call(json.loads(text))
    except ValueError:
        return None


def _partial_suffix(text: str, marker: str) -> int:
    """How many trailing characters of ``text`` could be the start of ``marker``."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


class ToolParser(abc.ABC):
    """One generation's text in, its content and tool calls out; a fresh one per answer."""

    name: ClassVar[str]

    @abc.abstractmethod
    def feed(self, text: str) -> str:
        """Take the next piece of text; return the content that is safe to send now."""

    @abc.abstractmethod
    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """At the end of the text: the content still held back, and the calls found."""

    @classmethod
    def parse(cls, text: str) -> tuple[str | None, list[dict[str, Any]]]:
        """A whole generation: its content (None when empty) and its calls."""
        parser = cls()
        content = parser.feed(text)
        rest, calls = parser.finish()
        return (content + rest) or None, calls


class HermesParser(ToolParser):
    """``<tool_call>{…}</tool_call>`` blocks. Whitespace between the content and a call
    is dropped, so an answer that is only calls has no content; the content streamed
    equals the content of the whole text parsed at once, however the text was cut."""

    name = "hermes"

    def __init__(self) -> None:
        self.buffer = ""  # not decided yet: a block, or what may start one
        self.blank = ""  # whitespace held back: dropped if a call follows it
        self.said = False  # some content has been given out
        self.calls: list[dict[str, Any]] = []

    def feed(self, text: str) -> str:
        self.buffer += text
        out: list[str] = []
        while True:
            start = self.buffer.find(HERMES_OPEN)
            if start < 0:
                safe = len(self.buffer) - _partial_suffix(self.buffer, HERMES_OPEN)
                out.append(self._text(self.buffer[:safe]))
                self.buffer = self.buffer[safe:]
                return "".join(out)
            out.append(self._text(self.buffer[:start]))
            self.buffer = self.buffer[start:]
            end = self.buffer.find(HERMES_CLOSE)
            if end < 0:  # the block goes on in later text
                return "".join(out)
            block = self.buffer[:end + len(HERMES_CLOSE)]
            self.buffer = self.buffer[len(block):]
            out.append(self._block(block, block[len(HERMES_OPEN):end]))

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        rest, self.buffer = self.buffer, ""
        if rest.startswith(HERMES_OPEN):  # a last block left open: a call if it is whole
            text = self._block(rest, rest[len(HERMES_OPEN):])
        else:
            text = self._text(rest)
        if not self.calls:
            text += self.blank
        self.blank = ""
        return text, self.calls

    def _block(self, block: str, inner: str) -> str:
        call = _call_from_json(inner)
        if call is None:
            return self._text(block)  # not a call: it stays text
        self.calls.append(call)
        self.blank = ""
        return ""

    def _text(self, piece: str) -> str:
        body = piece.rstrip()
        if not body:
            self.blank += piece
            return ""
        # Whitespace before the content's first word is dropped once a call came first.
        lead = self.blank if self.said or not self.calls else ""
        self.blank, self.said = piece[len(body):], True
        return lead + body


class Llama3JsonParser(ToolParser):
    """Llama 3.1's JSON tool calls: the whole answer is one or more
    ``{"name", "parameters"}`` objects (after ``<|python_tag|>`` or not), separated by
    ";". An answer that starts otherwise streams as it comes; one that starts with
    ``{`` or the tag is held to the end, then sent as text if it is not calls."""

    name = "llama3_json"

    def __init__(self) -> None:
        self.buffer = ""
        self.mode = ""  # "" undecided, "text" or "json"

    def feed(self, text: str) -> str:
        if self.mode == "text":
            return text
        self.buffer += text
        head = self.buffer.lstrip()
        if self.mode == "json" or not head or PYTHON_TAG.startswith(head):
            return ""
        if head.startswith(("{", PYTHON_TAG)):
            self.mode = "json"
            return ""
        self.mode = "text"
        out, self.buffer = self.buffer, ""
        return out

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        rest, self.buffer = self.buffer, ""
        calls = self.calls_in(rest) if self.mode == "json" else []
        return ("" if calls else rest), calls

    @staticmethod
    def calls_in(text: str) -> list[dict[str, Any]]:
        """Every call of a whole answer, or none when any part of it is not a call."""
        body = text.strip()
        body = body.removeprefix(PYTHON_TAG).lstrip()
        decoder = json.JSONDecoder()
        calls, position = [], 0
        while position < len(body):
            try:
                value, position = decoder.raw_decode(body, position)
            except ValueError:
                return []
            call = as_call(value)
            if call is None:
                return []
            calls.append(call)
            while position < len(body) and body[position] in _SEPARATORS:
                position += 1
        return calls


PARSERS: dict[str, type[ToolParser]] = {parser.name: parser
                                        for parser in (HermesParser, Llama3JsonParser)}


def with_tool_calls(config: EndpointConfig, request: ChatRequest,
                    deltas: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    """A local engine's ``deltas`` with the tool calls in their text sent as
    ``tool_calls``, when the request's tools are in play (``tools_in_play``); else
    ``deltas`` as they are."""
    if tools_in_play(config, request) is None:
        return deltas
    parallel = request.extra.get("parallel_tool_calls") is not False
    return _calls_from_text(PARSERS[config.tool_format](), deltas, parallel)


async def _calls_from_text(parser: ToolParser, deltas: AsyncIterator[Delta],
                           parallel: bool) -> AsyncIterator[Delta]:
    """Text as soon as it is safe; at the end the rest, one delta per call (the whole
    call in one fragment), and the finish with the underlying usage: "tool_calls"
    when a call was found. The tokens of held-back text ride on the next delta out."""
    tokens = 0
    try:
        async for delta in deltas:
            tokens += delta.tokens
            text = parser.feed(delta.text) if delta.text else ""
            if delta.finish_reason is None:
                if text:
                    yield Delta(text=text, tokens=tokens)
                    tokens = 0
                continue
            rest, calls = parser.finish()
            calls = calls if parallel else calls[:1]
            if text + rest:
                yield Delta(text=text + rest, tokens=tokens)
                tokens = 0
            for index, call in enumerate(calls):
                yield Delta(tool_calls=[{"index": index, **call}])
            yield Delta(tokens=tokens, finish_reason="tool_calls" if calls else delta.finish_reason,
                        usage=delta.usage)
            return
    finally:
        aclose = getattr(deltas, "aclose", None)
        if aclose is not None:  # the engine's own clean-up (a batch row, an abort)
            await aclose()
