"""The plugins that ship with OpenClaw. They are also declared as entry points
(pyproject.toml), but discovery lists them here too, so that they are there even
where the project is not installed as a package (a checkout on ``sys.path``)."""

from .pii import SENSITIVE_DATA_FLAG, PiiRedaction
from .sensitive_words import SensitiveWordFilter
from .system_prompt import SystemPromptTemplate

BUILTINS = (SensitiveWordFilter, PiiRedaction, SystemPromptTemplate)

__all__ = ["BUILTINS", "SENSITIVE_DATA_FLAG", "PiiRedaction", "SensitiveWordFilter",
           "SystemPromptTemplate"]
