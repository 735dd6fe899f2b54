import importlib

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _

# Engines that run in any process. Local engines (transformers, ONNX,
# TensorRT-LLM) import their heavy libraries lazily, inside worker processes.
ENGINE_MODULES = [
    "inference.engines.openai",
    "inference.engines.echo",
    "inference.engines.embedding",
    "inference.engines.transformers",
    "inference.engines.onnx",
    "inference.engines.tensorrt_llm",
]


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = _("Inference")

    def ready(self) -> None:
        from core.metrics import ENGINES_LOADED

        from .pool import get_pool

        ENGINES_LOADED.set_function(lambda: len(get_pool().loaded()))
        for module in ENGINE_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:
                    raise
