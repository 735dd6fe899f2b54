"""Anthropic's Messages API wire format, translated to and from the internal chat
request: ``system`` and ``messages`` (``text``, ``image``, ``tool_use`` and
``tool_result`` blocks) become chat messages — a user turn's tool results become
``tool`` messages before its text; ``tools`` (``input_schema``), ``tool_choice``
(``auto`` / ``any`` / ``tool`` / ``none``, ``disable_parallel_tool_use``),
``stop_sequences``, ``top_k`` and ``metadata.user_id`` their chat fields; an answer
becomes a ``message`` of ``text`` and ``tool_use`` blocks with its ``stop_reason``.
Errors take Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``."""

from __future__ import annotations

import json
import secrets
from typing import Any

from django.http import JsonResponse
from django.utils.translation import gettext as _

from inference.engines.base import ChatRequest, Choice, Usage

from . import validation
from .validation import InvalidBody
from .wire import body_and_model

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}
VERSION_HEADER = "anthropic-version"
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# --- errors ---------------------------------------------------------------------------


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_response(status: int, message: str,
                   retry_after: str | None = None) -> JsonResponse:
    response = JsonResponse(error_body(status, message), status=status)
    if retry_after:
        response["Retry-After"] = retry_after
    return response


def as_anthropic_error(response: JsonResponse) -> JsonResponse:
    """An OpenAI-shaped error response of the shared core in Anthropic's shape (one
    already in Anthropic's shape as it is)."""
    body = json.loads(response.content)
    if body.get("type") == "error":
        return response
    error = body["error"]
    message = error["message"] if not error.get("param") else \
        f"{error['param']}: {error['message']}"
    return error_response(response.status_code, message, response.get("Retry-After"))


# --- requests -------------------------------------------------------------------------


def parse_messages_body(raw: bytes) -> tuple[dict[str, Any], ChatRequest]:
    """(body, request) from a ``messages.create`` body, or ``InvalidBody``."""
    body, model = body_and_model(raw)
    validation.depth(body)
    max_tokens = validation.integer(body, "max_tokens", 1, validation.MAX_TOKENS)
    if max_tokens is None:
        raise InvalidBody(_("“max_tokens” is required."), "max_tokens")
    messages = _system(body.get("system")) + chat_messages(body.get("messages"))
    extra: dict[str, Any] = {}
    extra.update(_tools(body))
    top_k = validation.integer(body, "top_k", 0)
    if top_k is not None:
        extra["top_k"] = top_k
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidBody(_("“metadata” must be an object."), "metadata")
    if metadata and isinstance(metadata.get("user_id"), str):
        extra["user"] = metadata["user_id"]
    thinking = body.get("thinking")
    if thinking is not None and (not isinstance(thinking, dict)
                                 or thinking.get("type") != "disabled"):
        raise InvalidBody(_("Extended thinking is not supported here."), "thinking")
    stop = body.get("stop_sequences")
    if stop is not None and not (isinstance(stop, list)
                                 and all(isinstance(s, str) for s in stop)):
        raise InvalidBody(_("“stop_sequences” must be a list of strings."), "stop_sequences")
    validation.boolean(body, "stream")
    chat = ChatRequest(
        messages=messages, max_tokens=max_tokens,
        temperature=validation.number(body, "temperature", 0.0, 1.0),
        top_p=validation.number(body, "top_p", 0.0, 1.0), stop=stop or None, extra=extra,
        request_id=new_id("msg"))
    return {**body, "model": model}, chat


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if isinstance(system, list) and all(isinstance(b, dict) and b.get("type") == "text"
                                        and isinstance(b.get("text"), str) for b in system):
        return [{"role": "system", "content": "\n\n".join(b["text"] for b in system)}]
    raise InvalidBody(_("“system” must be a string or a list of text blocks."), "system")


def chat_messages(raw: Any) -> list[dict[str, Any]]:
    """Chat messages of Anthropic's ``messages``."""
    if not isinstance(raw, list) or not raw:
        raise InvalidBody(_("“messages” must be a non-empty list."), "messages")
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(raw):
        where = f"messages.{index}"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidBody(_("Each message needs a “role” of user or assistant."),
                              f"{where}.role")
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise InvalidBody(_("“content” must be a string or a list of blocks."),
                              f"{where}.content")
        if message["role"] == "user":
            messages += _user_turn(blocks, where)
        else:
            messages.append(_assistant_turn(blocks, where))
    return messages


def _user_turn(blocks: list[Any], where: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(blocks):
        here = f"{where}.content.{index}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            results.append(_tool_result(block, here))
        elif kind in ("text", "image"):
            parts.append(_part(block, here))
        else:
            raise InvalidBody(_("Blocks of type “%(type)s” are not supported in a user "
                                "message here.") % {"type": kind}, f"{here}.type")
    return results + ([{"role": "user", "content": _content(parts)}] if parts else [])


def _assistant_turn(blocks: list[Any], where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(blocks):
        here = f"{where}.content.{index}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            if not (isinstance(block.get("id"), str) and isinstance(block.get("name"), str)
                    and isinstance(block.get("input"), dict)):
                raise InvalidBody(_("A tool_use block needs an “id”, a “name” and an "
                                    "“input” object."), here)
            calls.append({"id": block["id"], "type": "function", "function": {
                "name": block["name"],
                "arguments": json.dumps(block["input"], ensure_ascii=False)}})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # a model's earlier reasoning, not sent on (as Anthropic drops it)
        else:
            raise InvalidBody(_("Blocks of type “%(type)s” are not supported in an "
                              "assistant message here.") % {"type": kind}, f"{here}.type")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _tool_result(block: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(block.get("tool_use_id"), str):
        raise InvalidBody(_("A tool_result block needs a “tool_use_id”."), where)
    content = block.get("content", "")
    if isinstance(content, list):
        if not all(isinstance(b, dict) and b.get("type") == "text" for b in content):
            raise InvalidBody(_("A tool result's content must be text here."),
                              f"{where}.content")
        content = "".join(str(b.get("text", "")) for b in content)
    if not isinstance(content, str):
        raise InvalidBody(_("A tool result's content must be a string or text blocks."),
                          f"{where}.content")
    if block.get("is_error"):
        content = f"Error: {content}"
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": content}


def _part(block: dict[str, Any], where: str) -> dict[str, Any]:
    if block["type"] == "text":
        if not isinstance(block.get("text"), str):
            raise InvalidBody(_("A text block needs a “text” string."), f"{where}.text")
        return {"type": "text", "text": block["text"]}
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64" \
            and isinstance(source.get("data"), str) and isinstance(source.get("media_type"), str):
        url = f"data:{source['media_type']};base64,{source['data']}"
    elif isinstance(source, dict) and source.get("type") == "url" \
            and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise InvalidBody(_("An image block needs a base64 or url “source”."),
                          f"{where}.source")
    return {"type": "image_url", "image_url": {"url": url}}


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def _tools(body: dict[str, Any]) -> dict[str, Any]:
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools is None and choice is None:
        return {}
    if not isinstance(tools, list) and tools is not None:
        raise InvalidBody(_("“tools” must be a list."), "tools")
    chat_tools = []
    for index, tool in enumerate(tools or []):
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom") \
                or not isinstance(tool.get("input_schema"), dict):
            raise InvalidBody(_("Only client tools with an “input_schema” are supported "
                                "here."), f"tools.{index}")
        chat_tools.append({"type": "function", "function": {
            "name": tool.get("name"), "description": tool.get("description") or "",
            "parameters": tool["input_schema"]}})
    found: dict[str, Any] = {"tools": chat_tools} if chat_tools else {}
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in (*TOOL_CHOICES, "tool"):
            raise InvalidBody(_("“tool_choice” must be auto, any, tool or none."),
                              "tool_choice")
        found["tool_choice"] = TOOL_CHOICES.get(choice["type"]) or {
            "type": "function", "function": {"name": choice.get("name")}}
        if choice.get("disable_parallel_tool_use"):
            found["parallel_tool_calls"] = False
    validation.tools(found)
    return found


# --- answers ---------------------------------------------------------------------------


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's arguments as the object a ``tool_use`` block carries; arguments that are
    not a JSON object are kept whole under ``arguments`` rather than lost."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def content_blocks(choice: Choice) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = choice.text or (choice.refusal if not choice.text else None)
    if text:
        blocks.append({"type": "text", "text": text})
    for call in choice.tool_calls or []:
        blocks.append({"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
                       "input": tool_input(call["function"]["arguments"])})
    return blocks


def stop_reason(finish: str | None, refused: bool = False) -> str:
    return "refusal" if refused else STOP_REASONS.get(finish or "stop", "end_turn")


def usage_body(usage: Usage) -> dict[str, Any]:
    return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def message_object(message_id: str, model: str, content: list[dict[str, Any]],
                   stop: str | None, usage: Usage) -> dict[str, Any]:
    return {"id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": usage_body(usage)}
