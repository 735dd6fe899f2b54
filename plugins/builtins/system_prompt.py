"""System-prompt templates: a system message rendered from a template with the
request's variables (``{user}``: the user's name, "the user" when it is not known;
``{date}``, ``{model}``, …), prepended to the conversation, replacing its system
messages, or only where it has none."""

from __future__ import annotations

import re

from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ..base import PluginBase, PluginRequest

VARIABLES = ("user", "date", "time", "datetime", "weekday", "model", "conversation_id")
# {{ and }} are literal braces; {name} is a variable.
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def render(template: str, values: dict[str, str]) -> str:
    """``template`` with each ``{name}`` replaced (unknown names are left as they are)."""
    def one(match: re.Match) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        return values.get(match.group(1), token)

    return _PLACEHOLDER.sub(one, template)


class SystemPromptTemplate(PluginBase):
    name = "system_prompt"
    version = "1.0"
    description = _("Adds a system message rendered from a template. Variables: {user}, "
                    "{date}, {time}, {datetime}, {weekday}, {model}, {conversation_id}; "
                    "{{ and }} are literal braces.")
    config_schema = {
        "type": "object",
        "properties": {
            "template": {"type": "string", "minLength": 1, "maxLength": 20000},
            "mode": {"enum": ["prepend", "replace", "if_missing"]},
        },
        "required": ["template"],
        "additionalProperties": False,
    }
    defaults = {"template": "You are a helpful assistant. Today is {date}.", "mode": "prepend"}

    @classmethod
    def check_config(cls, config: dict) -> list[tuple[str, str]]:
        unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(config["template"])
                          if m.group(1) is not None and m.group(1) not in VARIABLES})
        if unknown:
            return [("template", gettext("Unknown variables: %(names)s (available: "
                                         "%(available)s; write {{ and }} for literal braces).")
                     % {"names": ", ".join(f"{{{n}}}" for n in unknown),
                        "available": ", ".join(f"{{{n}}}" for n in VARIABLES)})]
        return []

    def pre_process(self, request: PluginRequest) -> PluginRequest:
        has_system = any(m.get("role") == "system" for m in request.messages)
        mode = self.config["mode"]
        if mode == "if_missing" and has_system:
            return request
        content = render(self.config["template"], self.values(request))
        first = request.messages[0] if request.messages else {}
        if mode == "prepend" and first.get("role") == "system" \
                and first.get("content") == content:
            return request  # already there (a history sent back with it)
        if mode == "replace":
            request.messages[:] = [m for m in request.messages if m.get("role") != "system"]
        request.messages.insert(0, {"role": "system", "content": content})
        self.record(request.metadata, "system_prompt", {"mode": mode})
        return request

    @staticmethod
    def values(request: PluginRequest) -> dict[str, str]:
        now = timezone.localtime()
        # Never an empty name (or an API key owner's id): "the user" when none is known.
        return {"user": request.user_name or gettext("the user"), "date": now.date().isoformat(),
                "time": now.strftime("%H:%M"), "datetime": now.isoformat(timespec="minutes"),
                "weekday": now.strftime("%A"), "model": request.model,
                "conversation_id": request.conversation_id}
