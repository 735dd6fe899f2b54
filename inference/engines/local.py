"""What the engines that run a model themselves (transformers, ONNX, TensorRT-LLM)
share: tool calling, when the endpoint names its model's ``tool_format``.

The tools are rendered into the prompt (``inference.tool_templates``) and the
calls read back out of the text (``inference.tool_parsing``), as vLLM does. A
model asked this way may answer with text instead of a call, so ``tool_choice``
"required" or a named function, which promise a call, are refused rather than
answered unkept.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _

from ..errors import Unsupported
from ..tool_parsing import PARSERS, TOOL_FIELDS
from .base import ChatRequest, EndpointConfig, Engine


class LocalEngine(Engine):
    """Base of the local engines: ``tools`` and ``tool_choice`` are honoured when the
    endpoint has a tool format."""

    @classmethod
    def honoured(cls, config: EndpointConfig) -> frozenset[str]:
        if config.tool_format in PARSERS:
            return cls.honours | TOOL_FIELDS
        return cls.honours

    @classmethod
    def check_request(cls, config: EndpointConfig, request: ChatRequest) -> None:
        super().check_request(config, request)
        choice: Any = request.extra.get("tool_choice")
        if choice == "required" or isinstance(choice, dict):
            raise Unsupported(_("%(model)s: the %(engine)s engine cannot force a tool call "
                                "(tool_choice “required” or a named function); use “auto”")
                              % {"model": config.name, "engine": cls.kind or config.engine},
                              param="tool_choice")
