"""Routing rules in words: a condition summarised on one line and each test explained,
in the active language. The condition's own syntax (``{"field", "op", "value"}``) is
data; what an operator or a studio user reads is built here.

Values the request or the rule carries (model names, numbers, strings) are shown as
they are; field names, operators and verdicts are translated.
"""

from __future__ import annotations

import json
from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

FIELD_LABELS: dict[str, Any] = {
    "model": gettext_lazy("model"),
    "context_length": gettext_lazy("context length"),
    "content": gettext_lazy("content"),
    "api_key": gettext_lazy("API key"),
    "user": gettext_lazy("user"),
    "group": gettext_lazy("groups"),
    "language": gettext_lazy("language"),
    "flag": gettext_lazy("flags"),
}
# Comparisons read as symbols in every language; the rest are words.
OP_LABELS: dict[str, Any] = {
    "eq": "=", "ne": "≠", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤",
    "in": gettext_lazy("in"), "not_in": gettext_lazy("not in"),
    "contains": gettext_lazy("contains"), "icontains": gettext_lazy("contains (any case)"),
    "startswith": gettext_lazy("starts with"), "regex": gettext_lazy("matches"),
}


def field_label(name: str) -> str:
    return str(FIELD_LABELS.get(name, name))


def op_label(op: str) -> str:
    return str(OP_LABELS.get(op, op))


def verdict(result: bool) -> str:
    return _("yes") if result else _("no")


def shown(value: Any) -> str:
    """A fact or an expected value, as the explanation shows it."""
    if isinstance(value, frozenset | set):
        return "[" + ", ".join(sorted(value)) + "]" if value else _("none")
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str | list) else repr(value)
    return text if len(text) <= 80 else text[:77] + "…"


def describe_condition(condition: dict) -> str:
    """A one-line summary: ``all of (model = "x", context length > 2048)``; ``always``."""
    if not condition:
        return _("always")
    if "not" in condition:
        return _("not (%(condition)s)") % {"condition": describe_condition(condition["not"])}
    if "all" in condition:
        return _("all of (%(conditions)s)") % {
            "conditions": ", ".join(describe_condition(c) for c in condition["all"])}
    if "any" in condition:
        return _("any of (%(conditions)s)") % {
            "conditions": ", ".join(describe_condition(c) for c in condition["any"])}
    return (f"{field_label(str(condition.get('field')))} {op_label(str(condition.get('op')))} "
            f"{shown(condition.get('value'))}")


def leaf_line(condition: dict, actual: Any, result: bool) -> str:
    """One test: ``model = "emergency": model is "echo" → no``."""
    return _("%(test)s: %(field)s is %(actual)s → %(verdict)s") % {
        "test": describe_condition(condition), "field": field_label(condition["field"]),
        "actual": shown(actual), "verdict": verdict(result)}


def group_line(key: str, result: bool) -> str:
    """The verdict of ``all`` / ``any`` / ``not`` / an empty (always true) condition."""
    words = {"all": _("all of"), "any": _("any of"), "not": _("not"), "always": _("always")}
    return f"{words[key]} → {verdict(result)}"
