"""The one small interface every engine implements.

An engine is built from an :class:`EndpointConfig` (a plain snapshot of a
``ModelEndpoint`` row: engines never touch the ORM) and offers an async
stream of :class:`Delta` s, an async ``generate`` that collects it, and
``cancel``. Failures are raised as :mod:`inference.errors` exceptions.
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from django.utils import translation
from django.utils.translation import gettext as _

from ..errors import EngineUnavailable, Unsupported


@dataclass(frozen=True)
class EndpointConfig:
    """What an engine needs to know about one model instance."""

    id: int | None
    name: str  # the model id clients ask for
    engine: str  # engine kind, e.g. "openai"
    url: str = ""  # base URL or full chat-completions URL (HTTP engines)
    path: str = ""  # local model folder (local engines)
    upstream_model: str = ""  # model id sent upstream; empty means `name`
    api_key: str = ""  # decrypted credential, never logged
    context_window: int = 4096
    max_output_tokens: int = 1024
    gpu_id: int | None = None
    max_batch: int = 8
    params: dict[str, Any] = field(default_factory=dict)  # default sampling params
    tool_format: str = ""  # local engines: how tools are prompted and parsed ("" = refused)
    connect_timeout: float = 5.0
    first_byte_timeout: float = 60.0
    total_timeout: float = 300.0

    @property
    def model_id(self) -> str:
        return self.upstream_model or self.name


@dataclass
class ChatRequest:
    """One chat-completion request, already validated by the caller."""

    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # other OpenAI body fields
    request_id: str = ""


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Delta:
    """A piece of the answer as it is produced, in OpenAI's chat terms.

    ``tokens`` counts the tokens in ``text`` (1 per streamed chunk when the backend
    does not say); the last delta of a choice carries ``finish_reason`` and, on
    choice 0, ``usage`` when known. ``index`` is the choice (a request for ``n``
    answers); ``tool_calls`` are OpenAI's streamed fragments (``{"index", "id"?,
    "type"?, "function": {"name"?, "arguments"?}}``, an argument string in pieces);
    ``logprobs`` this piece's entries (``{"content": [...]}``); ``fields`` the
    answer-level fields the backend sent (``system_fingerprint``, ``service_tier``);
    ``message_fields`` the message's other fields (``MESSAGE_FIELDS``: ``audio``,
    ``annotations``), in pieces as the backend streams them.
    """

    text: str = ""
    tokens: int = 0
    finish_reason: str | None = None
    usage: Usage | None = None
    index: int = 0
    tool_calls: list[dict[str, Any]] | None = None
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None
    fields: dict[str, Any] | None = None
    message_fields: dict[str, Any] | None = None

    @property
    def speaks(self) -> bool:
        """It carries part of the answer (text, a tool call, a refusal, audio…)."""
        return bool(self.text or self.tool_calls or self.refusal or self.message_fields)


@dataclass
class Choice:
    """One whole answer of a completion: its text (None when it is only tool calls),
    whole ``tool_calls`` (``{"id", "type": "function", "function": {"name",
    "arguments"}}``), a refusal, its logprobs and why it ended."""

    index: int = 0
    text: str | None = ""
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None
    message_fields: dict[str, Any] | None = None


# The message's fields besides content, tool calls and refusal that a backend may
# give (audio output, web-search annotations): passed back as they come.
MESSAGE_FIELDS = ("audio", "annotations")


def merge_fields(whole: dict[str, Any], piece: dict[str, Any]) -> None:
    """Fold a streamed piece of message fields into the whole: strings inside an
    object (``audio.data``, ``audio.transcript``) are joined, lists extended, the
    rest replaced."""
    for name, value in piece.items():
        known = whole.get(name)
        if isinstance(known, dict) and isinstance(value, dict):
            for key, part in value.items():
                if isinstance(known.get(key), str) and isinstance(part, str) \
                        and key not in ("id", "expires_at"):
                    known[key] += part
                else:
                    known[key] = part
        elif isinstance(known, list) and isinstance(value, list):
            known.extend(value)
        else:
            whole[name] = dict(value) if isinstance(value, dict) else value


@dataclass
class Completion:
    """A whole answer: choice 0's text, finish reason, tool calls, refusal and
    logprobs, the other choices (``n`` > 1) in ``more``, the usage and the
    answer-level ``fields``."""

    text: str
    finish_reason: str | None
    usage: Usage
    tool_calls: list[dict[str, Any]] | None = None
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None
    more: list[Choice] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    message_fields: dict[str, Any] | None = None

    @property
    def choices(self) -> list[Choice]:
        silent = (self.tool_calls or self.refusal) and not self.text  # content: null
        first = Choice(0, None if silent else self.text, self.finish_reason,
                       self.tool_calls, self.refusal, self.logprobs, self.message_fields)
        return [first, *self.more]


class _ChoiceParts:
    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.refusal: list[str] = []
        self.logprobs: dict[str, list[Any]] = {}
        self.message_fields: dict[str, Any] = {}
        self.finish_reason: str | None = None

    def add(self, delta: Delta) -> None:
        self.text.append(delta.text)
        if delta.refusal:
            self.refusal.append(delta.refusal)
        for fragment in delta.tool_calls or ():
            merge_tool_call(self.calls, fragment)
        for key, entries in (delta.logprobs or {}).items():
            if isinstance(entries, list):
                self.logprobs.setdefault(key, []).extend(entries)
        merge_fields(self.message_fields, delta.message_fields or {})
        self.finish_reason = delta.finish_reason or self.finish_reason

    def choice(self, index: int) -> Choice:
        calls = [self.calls[i] for i in sorted(self.calls)] or None
        text = "".join(self.text)
        refusal = "".join(self.refusal) or None
        return Choice(index, None if (calls or refusal) and not text else text,
                      self.finish_reason, calls, refusal, self.logprobs or None,
                      self.message_fields or None)


def merge_tool_call(calls: dict[int, dict[str, Any]], fragment: dict[str, Any]) -> None:
    """Fold one streamed tool-call fragment into the whole calls, by its ``index``."""
    index = fragment.get("index", 0) if isinstance(fragment.get("index"), int) else 0
    call = calls.setdefault(index, {"id": "", "type": "function",
                                    "function": {"name": "", "arguments": ""}})
    if fragment.get("id"):
        call["id"] = fragment["id"]
    if fragment.get("type"):
        call["type"] = fragment["type"]
    function = fragment.get("function") or {}
    if function.get("name"):
        call["function"]["name"] = function["name"]
    if function.get("arguments"):
        call["function"]["arguments"] += function["arguments"]


class Assembler:
    """Deltas in, the whole ``Completion`` out (tool-call fragments joined)."""

    def __init__(self) -> None:
        self.parts: dict[int, _ChoiceParts] = {}
        self.usage: Usage | None = None
        self.counted = 0
        self.fields: dict[str, Any] = {}

    def add(self, delta: Delta) -> None:
        self.parts.setdefault(delta.index, _ChoiceParts()).add(delta)
        self.counted += delta.tokens
        self.usage = delta.usage or self.usage
        self.fields.update(delta.fields or {})

    def completion(self) -> Completion:
        choices = [self.parts.setdefault(0, _ChoiceParts()).choice(0)]
        choices += [self.parts[i].choice(i) for i in sorted(self.parts) if i]
        first = choices[0]
        return Completion(first.text or "", first.finish_reason,
                          self.usage or Usage(0, self.counted), first.tool_calls,
                          first.refusal, first.logprobs, choices[1:], self.fields,
                          first.message_fields)


@dataclass
class EmbeddingResult:
    """One vector per input text, in input order, and the tokens the inputs took."""

    vectors: list[list[float]]
    prompt_tokens: int = 0


# Request fields that shape an answer beyond its text, and when a value asks for
# something (``n: 1`` or ``logprobs: false`` ask for nothing). An engine names those it
# honours (``Engine.honours``); a request asking another of it is refused with a 400
# naming the field, never answered as if it had not been asked.
SHAPING_FIELDS: dict[str, Callable[[Any], bool]] = {
    "n": lambda value: value not in (None, 1),
    "logprobs": bool,
    "top_logprobs": lambda value: value is not None,
    "tools": bool,
    "tool_choice": lambda value: value not in (None, "none"),
    "functions": bool,
    "function_call": lambda value: value not in (None, "none"),
    "response_format": lambda value: isinstance(value, dict) and value.get("type") != "text",
    "modalities": lambda value: value not in (None, ["text"]),
    "audio": lambda value: value is not None,
    "prediction": lambda value: value is not None,
    "logit_bias": bool,
    "frequency_penalty": bool,
    "presence_penalty": bool,
    "reasoning_effort": lambda value: value is not None,
    "web_search_options": lambda value: value is not None,
}
ALL_FIELDS = frozenset(SHAPING_FIELDS)


class Engine(abc.ABC):
    """Base of every engine adapter."""

    kind: ClassVar[str] = ""
    runs_in: ClassVar[str] = "caller"  # or "worker": see inference.registry
    honours: ClassVar[frozenset[str]] = frozenset()  # of SHAPING_FIELDS

    @classmethod
    def honoured(cls, config: EndpointConfig) -> frozenset[str]:
        """The fields of ``SHAPING_FIELDS`` this engine honours for ``config``: its
        ``honours``, unless what it can do depends on the endpoint."""
        return cls.honours

    @classmethod
    def check_request(cls, config: EndpointConfig, request: ChatRequest) -> None:
        """Refuse (``Unsupported``, 400) a request asking for what this engine cannot
        give, naming the field."""
        honoured = cls.honoured(config)
        for name, asks in SHAPING_FIELDS.items():
            if name not in honoured and name in request.extra and asks(request.extra[name]):
                raise Unsupported(_("%(model)s: “%(field)s” is not supported by the "
                                    "%(engine)s engine")
                                  % {"model": config.name, "field": name,
                                     "engine": cls.kind or config.engine}, param=name)

    def __init__(self, config: EndpointConfig):
        self.config = config

    async def load(self) -> None:  # noqa: B027 - optional hook
        """Load weights / build the runtime; the worker pool calls it once, before use.

        Heavy engines do their blocking work in a thread (``in_thread``)
        so other requests on the worker's loop keep streaming.
        """

    @abc.abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        """Yield deltas as the backend produces them; the last has ``finish_reason``."""

    async def generate(self, request: ChatRequest) -> Completion:
        """The whole answer at once (collects :meth:`stream`)."""
        assembler = Assembler()
        async for delta in self.stream(request):
            assembler.add(delta)
        return assembler.completion()

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        """One vector per text; engines that make embeddings override it."""
        raise EngineUnavailable(_("%(model)s: the %(engine)s engine does not make embeddings")
                                % {"model": self.config.name,
                                   "engine": self.kind or self.config.engine})

    async def cancel(self, request_id: str) -> None:  # noqa: B027 - optional hook
        """Stop generating for ``request_id``; engines with server-side work override."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what the engine holds (connections, models)."""


T = TypeVar("T")


async def in_thread(function: Callable[..., T], *args: Any,
                    executor: Executor | None = None) -> T:
    """``function(*args)`` in a thread (``executor``, else the loop's default), under the
    caller's language: Django's active language is per thread, and an error the thread
    builds (a model that will not load, a template that refuses the messages) is for
    the caller, who may have asked in 中文."""
    language = translation.get_language()

    def run() -> T:
        with translation.override(language):
            return function(*args)

    context = contextvars.copy_context()  # as asyncio.to_thread does
    return await asyncio.get_running_loop().run_in_executor(executor, context.run, run)
