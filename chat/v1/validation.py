"""Checks of a chat request's fields, as OpenAI makes them: each refusal is an
``InvalidBody`` naming the parameter (``messages[2].role``, ``tools[0].function.name``)
in a message for people, so no body a client can send reaches an engine malformed —
and none gives a 500.
"""

from __future__ import annotations

import math
import re
from typing import Any

from django.utils.translation import gettext as _

from core.text import lone_surrogate_at

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_N = 128  # OpenAI's bounds
MAX_TOOLS = 128
MAX_TOP_LOGPROBS = 20
MAX_DEPTH = 64  # nesting of a message's content or a tool's schema
# No engine generates more; it also keeps the value a 32-bit integer wherever it goes.
MAX_TOKENS = 2**31 - 1
SEED_RANGE = (-(2**63), 2**63 - 1)  # OpenAI's: a 64-bit integer
SAMPLING = ("max_tokens", "temperature", "top_p", "stop", "seed")


class InvalidBody(Exception):
    """A request body OpenAI would refuse: the message and the parameter at fault."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message, self.param = message, param


def number(body: dict, name: str, low: float, high: float | None) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or (isinstance(value, float) and not math.isfinite(value))  # NaN, Infinity
            or value < low or (high is not None and value > high)):
        limit = f"{low}–{high}" if high is not None else f"≥ {low}"
        raise InvalidBody(_("“%(name)s” must be a number %(limit)s.")
                          % {"name": name, "limit": limit}, name)
    return value


def integer(body: dict, name: str, low: int | None, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if (not isinstance(value, int) or isinstance(value, bool)
            or (low is not None and value < low) or (high is not None and value > high)):
        if low is None:
            message = _("“%(name)s” must be an integer.") % {"name": name}
        elif high is None:
            message = _("“%(name)s” must be an integer ≥ %(low)d.") % {"name": name, "low": low}
        else:
            message = _("“%(name)s” must be an integer from %(low)d to %(high)d.") % {
                "name": name, "low": low, "high": high}
        raise InvalidBody(message, name)
    return value


def stop(body: dict) -> list[str] | None:
    """``stop``: a string or a list of strings, as a list."""
    found = body.get("stop")
    if found is None:
        return None
    if isinstance(found, str):
        return [found]
    if isinstance(found, list) and all(isinstance(s, str) for s in found):
        return found
    raise InvalidBody(_("“stop” must be a string or a list of strings."), "stop")


def sampling(body: dict, max_temperature: float = 2.0) -> dict[str, Any]:
    """The sampling parameters (``SAMPLING``) of a chat request, each in OpenAI's range:
    the ``/v1`` chat bodies and the studio websocket's ``params`` are checked here."""
    return {"max_tokens": integer(body, "max_tokens", 1, MAX_TOKENS),
            "temperature": number(body, "temperature", 0.0, max_temperature),
            "top_p": number(body, "top_p", 0.0, 1.0), "stop": stop(body),
            "seed": integer(body, "seed", *SEED_RANGE)}


def boolean(body: dict, name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise InvalidBody(_("“%(name)s” must be true or false.") % {"name": name}, name)
    return value


def text(value: Any, path: str = "") -> None:
    """Refuse a value holding a string with an unpaired surrogate (``"\\ud800"``: valid
    JSON, not text — nothing can store or send it), naming where it is."""
    where = lone_surrogate_at(value, path)
    if where is not None:
        raise InvalidBody(_("“%(name)s” holds an unpaired surrogate (a lone "
                            "\\ud800–\\udfff escape), which is not text.")
                          % {"name": where}, where or None)


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply ``value`` nests lists and objects (counted without recursion, and
    stopped past ``limit``)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def messages(body: dict) -> list[dict[str, Any]]:
    found = body.get("messages")
    if not isinstance(found, list) or not found:
        raise InvalidBody(_("“messages” must be a non-empty list of {role, content} objects."),
                          "messages")
    for index, message in enumerate(found):
        _message(message, f"messages[{index}]")
    return found


def _message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise InvalidBody(_("Each message must be an object."), where)
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidBody(_("“role” must be one of %(roles)s.")
                          % {"roles": ", ".join(sorted(ROLES))}, f"{where}.role")
    content = message.get("content")
    may_be_empty = role == "assistant" and (message.get("tool_calls")
                                            or message.get("function_call")
                                            or "content" not in message or content is None)
    if not (isinstance(content, str | list) or (content is None and may_be_empty)):
        raise InvalidBody(_("“content” must be a string or a list of content parts."),
                          f"{where}.content")
    if isinstance(content, list) and (depth(content) > MAX_DEPTH or not all(
            isinstance(part, dict) and isinstance(part.get("type"), str) for part in content)):
        raise InvalidBody(_("Each content part must be an object with a “type”."),
                          f"{where}.content")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise InvalidBody(_("A “tool” message needs the “tool_call_id” it answers."),
                          f"{where}.tool_call_id")
    calls = message.get("tool_calls")
    if calls is not None and not (isinstance(calls, list) and all(_is_call(c) for c in calls)):
        raise InvalidBody(_("“tool_calls” must be a list of {id, type: function, function: "
                            "{name, arguments}} objects."), f"{where}.tool_calls")


def _is_call(call: Any) -> bool:
    function = call.get("function") if isinstance(call, dict) else None
    return (isinstance(call.get("id"), str) and isinstance(function, dict)
            and isinstance(function.get("name"), str)
            and isinstance(function.get("arguments"), str))


def tools(body: dict) -> list[str]:
    """Check ``tools``, ``tool_choice`` and ``parallel_tool_calls``; the tool names."""
    found = body.get("tools")
    names: list[str] = []
    if found is not None:
        if not isinstance(found, list) or len(found) > MAX_TOOLS:
            raise InvalidBody(_("“tools” must be a list of at most %(n)d tools.")
                              % {"n": MAX_TOOLS}, "tools")
        for index, tool in enumerate(found):
            names.append(_tool(tool, f"tools[{index}]"))
    choice = body.get("tool_choice")
    if choice is not None:
        _tool_choice(choice, names)
    boolean(body, "parallel_tool_calls")
    return names


def _tool(tool: Any, where: str) -> str:
    function = tool.get("function") if isinstance(tool, dict) else None
    if isinstance(tool, dict) and isinstance(tool.get("type"), str) \
            and tool["type"] != "function":
        raise InvalidBody(_("Only function tools are supported here (not “%(type)s”).")
                          % {"type": tool["type"]}, f"{where}.type")
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(
            function, dict):
        raise InvalidBody(_("Each tool must be {\"type\": \"function\", \"function\": {…}}."),
                          where)
    name = function.get("name")
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise InvalidBody(_("A function's “name” is 1–64 letters, digits, “_” or “-”."),
                          f"{where}.function.name")
    parameters = function.get("parameters")
    if parameters is not None and (not isinstance(parameters, dict)
                                   or depth(parameters) > MAX_DEPTH):
        raise InvalidBody(_("A function's “parameters” must be a JSON schema object."),
                          f"{where}.function.parameters")
    if function.get("description") is not None and not isinstance(function["description"],
                                                                   str):
        raise InvalidBody(_("A function's “description” must be a string."),
                          f"{where}.function.description")
    return name


def _tool_choice(choice: Any, names: list[str]) -> None:
    if choice in ("none", "auto", "required"):
        if choice == "required" and not names:
            raise InvalidBody(_("“tool_choice” “required” needs “tools”."), "tool_choice")
        return
    function = choice.get("function") if isinstance(choice, dict) else None
    if not (isinstance(choice, dict) and choice.get("type") == "function"
            and isinstance(function, dict) and isinstance(function.get("name"), str)):
        raise InvalidBody(_("“tool_choice” must be “none”, “auto”, “required” or "
                            "{\"type\": \"function\", \"function\": {\"name\": …}}."),
                          "tool_choice")
    if function["name"] not in names:
        raise InvalidBody(_("“tool_choice” names “%(name)s”, which is not in “tools”.")
                          % {"name": function["name"]}, "tool_choice")


def choices_and_logprobs(body: dict) -> None:
    """``n``, ``logprobs`` and ``top_logprobs`` within OpenAI's bounds."""
    integer(body, "n", 1, MAX_N)
    logprobs = boolean(body, "logprobs")
    if integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS) is not None and not logprobs:
        raise InvalidBody(_("“top_logprobs” needs “logprobs”: true."), "top_logprobs")


def response_format(body: dict) -> None:
    found = body.get("response_format")
    if found is None:
        return
    kind = found.get("type") if isinstance(found, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise InvalidBody(_("“response_format” must be {\"type\": \"text\" | \"json_object\" "
                            "| \"json_schema\"}."), "response_format")
    if kind == "json_schema":
        spec = found.get("json_schema")
        if not (isinstance(spec, dict) and isinstance(spec.get("name"), str)
                and isinstance(spec.get("schema", {}), dict)):
            raise InvalidBody(_("“json_schema” must be {\"name\": …, \"schema\": {…}}."),
                              "response_format.json_schema")
