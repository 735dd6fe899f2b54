"""OpenAI's Responses API wire format, translated to and from the internal chat request:
``input`` (a string or items — messages with ``input_text`` / ``input_image`` /
``output_text`` parts, ``function_call``, ``function_call_output``) and
``instructions`` become chat messages; flat function ``tools`` and ``tool_choice``,
``text.format`` (structured output), ``max_output_tokens`` and ``top_logprobs`` become
their chat fields; an answer becomes ``output`` items — a ``message`` (``output_text``
or ``refusal``) and a ``function_call`` per call — in a ``response`` object.
What has no equivalent here (built-in tools, ``background``) is refused naming it."""

from __future__ import annotations

import secrets
from typing import Any

from django.utils.translation import gettext as _

from inference.engines.base import ChatRequest, Choice, Usage

from . import validation
from .validation import InvalidBody
from .wire import body_and_model

ROLES = {"user", "assistant", "system", "developer"}
PASSED_ON = ("parallel_tool_calls", "user", "service_tier", "metadata", "seed")
REFUSED = ("background", "prompt", "conversation")  # OpenAI features with no equivalent here


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def parse_responses_body(raw: bytes) -> tuple[dict[str, Any], ChatRequest, list[dict]]:
    """(body, the request without the history of ``previous_response_id``, the input items
    with their ids) from a ``responses.create`` body, or ``InvalidBody``."""
    body, model = body_and_model(raw)
    for name in REFUSED:
        if body.get(name):
            raise InvalidBody(_("“%(name)s” is not supported here.") % {"name": name}, name)
    items = input_items(body.get("input"))
    messages = [] if body.get("instructions") is None else [_instructions(body)]
    messages += items_to_messages(items)
    extra: dict[str, Any] = {name: body[name] for name in PASSED_ON if name in body}
    extra.update(_tools(body))
    extra.update(_text_format(body))
    top = validation.integer(body, "top_logprobs", 0, validation.MAX_TOP_LOGPROBS)
    if top:
        extra.update(logprobs=True, top_logprobs=top)
    effort = (body.get("reasoning") or {}).get("effort") if isinstance(
        body.get("reasoning"), dict) else None
    if effort:
        extra["reasoning_effort"] = effort
    chat = ChatRequest(
        messages=messages, max_tokens=validation.integer(body, "max_output_tokens", 1,
                                                        validation.MAX_TOKENS),
        temperature=validation.number(body, "temperature", 0.0, 2.0),
        top_p=validation.number(body, "top_p", 0.0, 1.0), extra=extra,
        request_id=new_id("resp"))
    validation.boolean(body, "stream")
    validation.boolean(body, "store")
    if body.get("previous_response_id") is not None and not isinstance(
            body["previous_response_id"], str):
        raise InvalidBody(_("“previous_response_id” must be a response id."),
                          "previous_response_id")
    return {**body, "model": model}, chat, items


def _instructions(body: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(body["instructions"], str):
        raise InvalidBody(_("“instructions” must be a string."), "instructions")
    return {"role": "system", "content": body["instructions"]}


def input_items(raw: Any) -> list[dict[str, Any]]:
    """The input as items, each with an id (as ``input_items`` lists them)."""
    if isinstance(raw, str):
        return [{"type": "message", "id": new_id("msg"), "role": "user",
                 "content": [{"type": "input_text", "text": raw}]}]
    if not isinstance(raw, list) or not raw:
        raise InvalidBody(_("“input” must be a string or a non-empty list of items."), "input")
    items = []
    for index, item in enumerate(raw):
        items.append(_item(item, f"input[{index}]"))
    return items


def _item(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InvalidBody(_("Each input item must be an object."), where)
    kind = item.get("type", "message")
    if kind == "message":
        role, content = item.get("role"), item.get("content")
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidBody(_("“role” must be one of %(roles)s.")
                              % {"roles": ", ".join(sorted(ROLES))}, f"{where}.role")
        parts = ([{"type": "input_text" if role != "assistant" else "output_text",
                   "text": content}] if isinstance(content, str) else content)
        if not isinstance(parts, list) or not all(_is_part(p) for p in parts):
            raise InvalidBody(_("“content” must be a string or a list of content parts."),
                              f"{where}.content")
        return {"type": "message", "id": item.get("id") or new_id("msg"), "role": role,
                "content": parts}
    if kind == "function_call":
        if not all(isinstance(item.get(k), str) for k in ("call_id", "name", "arguments")):
            raise InvalidBody(_("A function_call needs “call_id”, “name” and “arguments”."),
                              where)
        return {"type": "function_call", "id": item.get("id") or new_id("fc"),
                "call_id": item["call_id"], "name": item["name"],
                "arguments": item["arguments"], "status": "completed"}
    if kind == "function_call_output":
        if not isinstance(item.get("call_id"), str) or not isinstance(item.get("output"), str):
            raise InvalidBody(_("A function_call_output needs “call_id” and a string "
                                "“output”."), where)
        return {"type": "function_call_output", "id": item.get("id") or new_id("fco"),
                "call_id": item["call_id"], "output": item["output"]}
    raise InvalidBody(_("Input items of type “%(type)s” are not supported here.")
                      % {"type": kind}, f"{where}.type")


def _is_part(part: Any) -> bool:
    if not isinstance(part, dict):
        return False
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        return isinstance(part.get("text"), str)
    if kind == "refusal":
        return isinstance(part.get("refusal"), str)
    return kind == "input_image" and isinstance(part.get("image_url"), str)


def items_to_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages of items: consecutive function calls become one assistant message
    with its tool calls, their outputs ``tool`` messages."""
    messages: list[dict[str, Any]] = []
    for item in items:
        if item["type"] == "message":
            messages.append({"role": item["role"], "content": _chat_content(item["content"])})
        elif item["type"] == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") \
                    and not last.get("content"):
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": item["output"]})
    return messages


def _chat_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(p["type"] in ("input_text", "output_text") for p in parts):
        return "".join(p["text"] for p in parts)
    converted: list[dict[str, Any]] = []
    for part in parts:
        if part["type"] == "input_image":
            converted.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        elif part["type"] == "refusal":
            converted.append({"type": "text", "text": part["refusal"]})
        else:
            converted.append({"type": "text", "text": part["text"]})
    return converted


def _tools(body: dict[str, Any]) -> dict[str, Any]:
    tools = body.get("tools")
    if tools is None:
        return {}
    if not isinstance(tools, list):
        raise InvalidBody(_("“tools” must be a list."), "tools")
    chat_tools = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise InvalidBody(_("Only function tools are supported here (not “%(type)s”).")
                              % {"type": kind}, f"tools[{index}].type")
        chat_tools.append({"type": "function", "function": {
            key: tool[key] for key in ("name", "description", "parameters", "strict")
            if tool.get(key) is not None}})
    found: dict[str, Any] = {"tools": chat_tools}
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    if choice is not None:
        found["tool_choice"] = choice
    validation.tools(found | {"parallel_tool_calls": body.get("parallel_tool_calls")})
    return found


def _text_format(body: dict[str, Any]) -> dict[str, Any]:
    text = body.get("text")
    if text is None:
        return {}
    form = text.get("format") if isinstance(text, dict) else None
    if form is None:
        return {}
    kind = form.get("type") if isinstance(form, dict) else None
    if kind == "json_schema":
        spec = {key: form[key] for key in ("name", "schema", "strict", "description")
                if key in form}
        response_format = {"type": "json_schema", "json_schema": spec}
    elif kind in ("text", "json_object"):
        response_format = {"type": kind}
    else:
        raise InvalidBody(_("“text.format” must be text, json_object or json_schema."),
                          "text.format")
    validation.response_format({"response_format": response_format})
    return {"response_format": response_format}


# --- answers ---------------------------------------------------------------------------


def output_items(choice: Choice) -> list[dict[str, Any]]:
    """A choice as output items: its message (text or refusal), then its calls."""
    items: list[dict[str, Any]] = []
    if choice.text or choice.refusal or not choice.tool_calls:
        part: dict[str, Any] = ({"type": "refusal", "refusal": choice.refusal}
                                if choice.refusal and not choice.text else
                                {"type": "output_text", "text": choice.text or "",
                                 "annotations": [], "logprobs": _logprobs(choice.logprobs)})
        items.append({"type": "message", "id": new_id("msg"), "status": "completed",
                      "role": "assistant", "content": [part]})
    for call in choice.tool_calls or []:
        items.append({"type": "function_call", "id": new_id("fc"), "call_id": call["id"],
                      "name": call["function"]["name"],
                      "arguments": call["function"]["arguments"], "status": "completed"})
    return items


def _logprobs(entries: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list((entries or {}).get("content") or [])


def usage_body(usage: Usage) -> dict[str, Any]:
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens}


def given(body: dict[str, Any], name: str, default: Any) -> Any:
    """A request field as the response echoes it: ``default`` when absent or null."""
    value = body.get(name)
    return default if value is None else value


def stored(body: dict[str, Any]) -> bool:
    return given(body, "store", True) is not False


def response_object(response_id: str, created_at: int, body: dict[str, Any], model: str,
                    status: str, output: list[dict[str, Any]], usage: Usage | None,
                    finish_reason: str | None = None) -> dict[str, Any]:
    """The ``response`` object, its request fields echoed as OpenAI echoes them."""
    incomplete = finish_reason == "length"
    answer = {
        "id": response_id, "object": "response", "created_at": created_at,
        "status": "incomplete" if incomplete and status == "completed" else status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"), "model": model,
        "output": output, "parallel_tool_calls": given(body, "parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None}, "store": stored(body),
        "temperature": given(body, "temperature", 1.0),
        "text": given(body, "text", {"format": {"type": "text"}}),
        "tool_choice": given(body, "tool_choice", "auto"), "tools": given(body, "tools", []),
        "top_p": given(body, "top_p", 1.0), "truncation": given(body, "truncation", "disabled"),
        "metadata": given(body, "metadata", {}),
    }
    if usage is not None:  # none while in progress: the field is left out, never null
        answer["usage"] = usage_body(usage)
    if isinstance(body.get("user"), str):
        answer["user"] = body["user"]
    return answer
