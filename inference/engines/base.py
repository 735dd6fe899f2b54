"""The one small interface every engine implements.

An engine is built from an :class:`EndpointConfig` (a plain snapshot of a
``ModelEndpoint`` row: engines never touch the ORM) and offers an async
stream of :class:`Delta` s, an async ``generate`` that collects it, and
``cancel``. Failures are raised as :mod:`inference.errors` exceptions.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import EngineUnavailable


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
    """A piece of the answer as it is produced.

    ``tokens`` counts the tokens in ``text`` (1 per streamed chunk when the
    backend does not say); the last delta carries ``finish_reason`` and, when
    known, ``usage``.
    """

    text: str = ""
    tokens: int = 0
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass
class Completion:
    text: str
    finish_reason: str | None
    usage: Usage


@dataclass
class EmbeddingResult:
    """One vector per input text, in input order, and the tokens the inputs took."""

    vectors: list[list[float]]
    prompt_tokens: int = 0


class Engine(abc.ABC):
    """Base of every engine adapter."""

    kind: ClassVar[str] = ""
    runs_in: ClassVar[str] = "caller"  # or "worker": see inference.registry

    def __init__(self, config: EndpointConfig):
        self.config = config

    async def load(self) -> None:  # noqa: B027 - optional hook
        """Load weights / build the runtime; the worker pool calls it once, before use.

        Heavy engines do their blocking work in a thread (``asyncio.to_thread``)
        so other requests on the worker's loop keep streaming.
        """

    @abc.abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        """Yield deltas as the backend produces them; the last has ``finish_reason``."""

    async def generate(self, request: ChatRequest) -> Completion:
        """The whole answer at once (collects :meth:`stream`)."""
        parts: list[str] = []
        finish_reason = None
        usage = None
        counted = 0
        async for delta in self.stream(request):
            parts.append(delta.text)
            counted += delta.tokens
            finish_reason = delta.finish_reason or finish_reason
            usage = delta.usage or usage
        return Completion("".join(parts), finish_reason, usage or Usage(0, counted))

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        """One vector per text; engines that make embeddings override it."""
        raise EngineUnavailable(f"{self.config.name}: the {self.kind or 'this'} engine does "
                                "not make embeddings")

    async def cancel(self, request_id: str) -> None:  # noqa: B027 - optional hook
        """Stop generating for ``request_id``; engines with server-side work override."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what the engine holds (connections, models)."""
