"""The kinds of engine an endpoint can name, and which of them speak HTTP, run on a
worker's own hardware or can chat. The registry rows (``routing.models.ModelEndpoint``)
choose among these; each engine module registers its class for its kinds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models
from django.utils.translation import gettext_lazy as _

if TYPE_CHECKING:  # django-stubs' alias, for type checking only (a dev dependency)
    from django_stubs_ext import StrOrPromise


class EngineKind(models.TextChoices):
    OPENAI = "openai", _("OpenAI-compatible HTTP (cloud, trtllm-serve, llama.cpp, Ollama)")
    VLLM = "vllm", _("vLLM server (OpenAI-compatible HTTP)")
    TENSORRT_LLM = "tensorrt_llm", _("TensorRT-LLM (GPU worker)")
    TRANSFORMERS = "transformers", _("Hugging Face transformers (CPU/GPU worker)")
    ONNX = "onnx", _("ONNX Runtime (CPU/GPU worker)")
    ECHO = "echo", _("Echo (wiring check: repeats the input)")
    EMBEDDING = "embedding", _("Sentence embeddings (local, in process)")


HTTP_ENGINES = {EngineKind.OPENAI, EngineKind.VLLM}
LOCAL_ENGINES = {EngineKind.TENSORRT_LLM, EngineKind.TRANSFORMERS, EngineKind.ONNX}
# Kinds whose models answer with something other than text (vectors; a ``rerank`` kind's
# scores will join them): never offered where a conversation picks its model.
NON_CHAT_ENGINES = frozenset({EngineKind.EMBEDDING})
CHAT_ENGINES = frozenset(EngineKind) - NON_CHAT_ENGINES

# A few words per kind, where a table has no room for the whole label (the admin's list);
# product names stay as they are.
SHORT_LABELS: dict[str, StrOrPromise] = {
    EngineKind.OPENAI: _("OpenAI-compatible"),
    EngineKind.VLLM: "vLLM",
    EngineKind.TENSORRT_LLM: "TensorRT-LLM",
    EngineKind.TRANSFORMERS: "transformers",
    EngineKind.ONNX: "ONNX Runtime",
    EngineKind.ECHO: _("Echo (wiring check)"),
    EngineKind.EMBEDDING: _("Embeddings"),
}


def can_chat(engine: str) -> bool:
    """Whether a model of this engine kind can answer a conversation."""
    return engine in CHAT_ENGINES


class ToolFormat(models.TextChoices):
    """How a local engine prompts a model with tools and finds the calls in its text
    (``inference.tool_templates``, ``inference.tool_parsing``)."""

    NONE = "", _("None (tools refused)")
    HERMES = "hermes", _("Hermes (<tool_call> JSON blocks: Qwen, Hermes and others)")
    LLAMA3_JSON = "llama3_json", _("Llama 3.1 JSON (a name and parameters object)")
