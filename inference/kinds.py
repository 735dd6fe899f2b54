"""The kinds of engine an endpoint can name, and which of them speak HTTP or run on a
worker's own hardware. The registry rows (``routing.models.ModelEndpoint``) choose
among these; each engine module registers its class for its kinds."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


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


class ToolFormat(models.TextChoices):
    """How a local engine prompts a model with tools and finds the calls in its text
    (``inference.tool_templates``, ``inference.tool_parsing``)."""

    NONE = "", _("None (tools refused)")
    HERMES = "hermes", _("Hermes (<tool_call> JSON blocks: Qwen, Hermes and others)")
    LLAMA3_JSON = "llama3_json", _("Llama 3.1 JSON (a name and parameters object)")
