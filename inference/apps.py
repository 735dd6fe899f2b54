import importlib

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _

# Engines that run in any process. Local engines (transformers, ONNX,
# TensorRT-LLM) import their heavy libraries lazily, inside worker processes.
ENGINE_MODULES = ["inference.engines.openai", "inference.engines.echo"]


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = _("Inference")

    def ready(self) -> None:
        for module in ENGINE_MODULES:
            importlib.import_module(module)
