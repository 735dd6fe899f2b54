"""``/v1/chat/completions`` for workflows and server-side conversations.

A request goes here (from ``chat.v1.completions``, after the key is admitted)
when its ``model`` is ``workflow/<slug>``, or when it names a conversation (header
``X-OpenClaw-Conversation`` or body ``metadata.conversation_id``). The conversation
keeps the history, so only the request's last user message is sent as the new turn;
it runs through ``chat.graph.service.astream_turn`` and is answered in OpenAI's shape,
streamed or not, with ``x-openclaw-conversation`` naming the conversation.

A new conversation of a key that a workflow lists (``Workflow.api_keys``) runs that
workflow. ``metadata.model`` picks the model of a ``workflow/<slug>`` run (else the
workflow's default model); ``metadata.resume`` (``{"action": "approve" | "edit" | "reject", …}``)
resumes a run that waits for approval. A run that stops at an approval answers with
``finish_reason: "interrupted"`` and ``x_openclaw.status: "waiting"``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.utils.translation import gettext as _

from core.text import object_id, uuid_id
from inference.engines.base import ChatRequest, Choice
from routing.admission import Ticket, check_scope
from routing.key_models import ApiKey
from routing.keys import KeyRefused
from routing.usage import log_usage

from ..conversations import key_identity
from ..graph.service import astream_resume, astream_turn
from ..models import Workflow
from .auth import refused
from .validation import InvalidBody
from .wire import (
    SSE_DONE,
    ApiRequest,
    ChunkWriter,
    choice_body,
    completion_body,
    error_response,
    sse_response,
)

WORKFLOW_PREFIX = "workflow/"
CONVERSATION_HEADER = "X-OpenClaw-Conversation"
SAMPLING = ("max_tokens", "temperature", "top_p", "stop", "seed")


def applies(request: ApiRequest, model: str, extra: dict[str, Any]) -> bool:
    """Whether a chat request is for a workflow or a server-side conversation."""
    if model.startswith(WORKFLOW_PREFIX) or CONVERSATION_HEADER in request.headers:
        return True
    metadata = extra.get("metadata")
    return isinstance(metadata, dict) and ("conversation_id" in metadata
                                           or "resume" in metadata)


def _error(status: int, message: str, code: str, conversation: str | None = None,
           param: str | None = None) -> JsonResponse:
    response = error_response(status, message, code, param)
    if conversation:
        response["x-openclaw-conversation"] = conversation
    return response


def _conversation_named(request: ApiRequest, metadata: dict[str, Any]) -> str | None:
    """The conversation the request continues — the header's, else
    ``metadata.conversation_id`` — as a UUID's text; None (or "") starts a new one.
    Anything else is ``InvalidBody`` naming where it came from."""
    header = request.headers.get(CONVERSATION_HEADER)
    given, where = ((header, CONVERSATION_HEADER) if header
                    else (metadata.get("conversation_id"), "metadata.conversation_id"))
    if given is None or given == "":
        return None
    conversation = uuid_id(given)
    if conversation is None:
        raise InvalidBody(_("“%(name)s” must be a conversation's id (a UUID).")
                          % {"name": where}, where)
    return conversation


def _last_user_text(chat: ChatRequest) -> str | list[dict] | None:
    for message in reversed(chat.messages):
        if message.get("role") == "user" and message.get("content"):
            return message["content"]
    return None


def key_workflow(key: ApiKey) -> str | None:
    """The workflow an API key's new conversations run (the admin's choice), if any."""
    return (Workflow.objects.filter(api_keys=key, enabled=True).order_by("slug")
            .values_list("slug", flat=True).first())


def _default_model(slug: str) -> str | None:
    return Workflow.objects.filter(slug=slug, enabled=True).values_list(
        "default_model", flat=True).first()


async def complete(request: ApiRequest, ticket: Ticket, model: str, streaming: bool,
                   include_usage: bool, chat: ChatRequest, started: float) -> HttpResponseBase:
    """Run the request's turn (or resume) and answer in OpenAI's shape. A refusal before
    the run gives the admission's reservation back."""
    response = await _start(request, ticket, model, streaming, include_usage, chat, started)
    if response.status_code >= 400:
        ticket.settle_soon(0)
    return response


async def _start(request: ApiRequest, ticket: Ticket, model: str, streaming: bool,
                 include_usage: bool, chat: ChatRequest, started: float) -> HttpResponseBase:
    key = ticket.api_key
    metadata = chat.extra.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    try:
        conversation = _conversation_named(request, metadata)
    except InvalidBody as exc:
        return _error(400, exc.message, "invalid_request", param=exc.param)
    slug = model[len(WORKFLOW_PREFIX):] if model.startswith(WORKFLOW_PREFIX) else None
    user = await sync_to_async(key_identity)(key)
    if "resume" in metadata:
        if not conversation:
            return _error(400, _("A resume needs the conversation's id."), "invalid_request",
                          param="metadata.conversation_id")
        events = astream_resume(conversation_id=conversation, user=user,
                                resume=metadata["resume"])
    else:
        run_model = model
        if slug is not None:
            default = await sync_to_async(_default_model)(slug) if object_id(slug) else None
            if default is None:
                return _error(404, _("No enabled workflow “%(slug)s”.") % {"slug": slug},
                              "workflow_not_found", param="model")
            run_model = metadata.get("model") or default
            if not isinstance(run_model, str):
                return _error(400, _("“metadata.model” must be a model name."),
                              "invalid_request", param="metadata.model")
            try:  # a workflow scope never opens another model than the workflow's own
                check_scope(key, run_model or None, workflow=slug, own_model=default)
            except KeyRefused as exc:
                return refused(exc)
            if not run_model:
                return _error(400, _("Workflow “%(slug)s” has no default model: name one in "
                                     "“metadata.model”.") % {"slug": slug},
                              "invalid_request", param="metadata.model")
        elif not conversation:
            slug = await sync_to_async(key_workflow)(key)
        content = _last_user_text(chat)
        if content is None:
            return _error(400, _("The request has no user message to send."),
                          "invalid_request", param="messages")
        params = {name: getattr(chat, name) for name in SAMPLING}
        events = astream_turn(conversation_id=conversation,
                              user=user, content=content, model=str(run_model),
                              api_key=key.prefix, params=params, workflow=slug)
    first = await anext(events, None)
    if first is None or first["type"] == "error":
        first = first or {"status": 500, "message": _("The run produced nothing."),
                          "code": "internal_error"}
        return _error(first["status"], first["message"], first["code"], conversation)
    conversation = first["id"]
    if streaming:
        return _stream(ticket, chat, model, conversation, events, include_usage, started)
    return await _whole(ticket, chat, model, conversation, events, started)


def _headers(response: HttpResponseBase, conversation: str, last: dict,
             started: float) -> None:
    route = last.get("route") or {}
    response["x-openclaw-model"] = last.get("model", "")
    response["x-openclaw-route"] = f"{route.get('rule') or 'direct'}; " \
                                   f"instance={route.get('instance')}"
    overhead = last.get("overhead_ms")
    response["x-openclaw-overhead-ms"] = f"{overhead if overhead is not None else 0:.1f}"
    response["x-openclaw-conversation"] = conversation


# Server-side steps a run reports to /v1 clients (README "Agents and tools"): in a stream,
# each as a chunk with an empty delta and the event under ``x_openclaw.event``; in a whole
# answer, listed under ``x_openclaw.steps``. OpenAI's clients ignore both.
STEP_EVENTS = frozenset({"tool_call", "tool_result", "approval"})


def _extension(last: dict, conversation: str,
               steps: list[dict] | None = None) -> dict[str, Any]:
    listed = {"steps": steps} if steps else {}
    if last.get("type") == "waiting":
        return {"conversation_id": conversation, "status": "waiting",
                "run_id": last["run_id"], "interrupts": last["interrupts"], **listed}
    return {"conversation_id": conversation, "status": "done",
            "message_id": last.get("message_id"), "models": last.get("models", []),
            "route": last.get("route", {}), **listed}


def _log(ticket: Ticket, chat: ChatRequest, last: dict, status: int, started: float) -> None:
    usage = last.get("usage") or {}
    ticket.settle_soon(usage.get("total_tokens", 0))
    key = ticket.api_key
    log_usage(key_prefix=key.prefix, user=str(key.owner_id or ""), model=last.get("model", ""),
              instance=(last.get("route") or {}).get("instance"),
              tokens_in=usage.get("prompt_tokens", 0),
              tokens_out=usage.get("completion_tokens", 0),
              latency_ms=(time.perf_counter() - started) * 1000, status=status,
              endpoint="chat-workflow", request_id=chat.request_id)


async def _whole(ticket: Ticket, chat: ChatRequest, model: str, conversation: str,
                 events: AsyncIterator[dict], started: float) -> JsonResponse:
    last: dict = {}
    steps: list[dict] = []
    async for event in events:
        last = event
        if event["type"] in STEP_EVENTS:
            steps.append(event)
    if last.get("type") not in ("done", "waiting"):
        _log(ticket, chat, last, last.get("status", 500), started)
        return _error(last.get("status", 500), last.get("message", ""),
                      last.get("code", "internal_error"), conversation)
    waiting = last["type"] == "waiting"
    usage = last.get("usage") or {"prompt_tokens": 0, "completion_tokens": 0,
                                  "total_tokens": 0}
    finish = "interrupted" if waiting else last.get("finish_reason") or "stop"
    content = "" if waiting else last["content"]
    body = completion_body(chat.request_id, int(time.time()), last.get("model") or model,
                           [choice_body(Choice(0, content, finish))], usage,
                           x_openclaw=_extension(last, conversation, steps))
    response = JsonResponse(body)
    _headers(response, conversation, last, started)
    _log(ticket, chat, last, 200, started)
    return response


def _stream(ticket: Ticket, chat: ChatRequest, model: str, conversation: str,
            events: AsyncIterator[dict], include_usage: bool,
            started: float) -> StreamingHttpResponse:
    response = sse_response(_sse(ticket, chat, model, conversation, events, include_usage,
                                 started))
    _headers(response, conversation, {"model": model}, started)
    return response


async def _sse(ticket: Ticket, chat: ChatRequest, model: str, conversation: str,
               events: AsyncIterator[dict], include_usage: bool,
               started: float) -> AsyncIterator[bytes]:
    writer = ChunkWriter(chat.request_id, int(time.time()), model)
    yield writer.chunk({"role": "assistant", "content": ""})
    last: dict = {}
    async for event in events:
        last = event
        if event["type"] == "token":
            yield writer.chunk({"content": event["text"]})
        elif event["type"] in STEP_EVENTS:
            yield writer.chunk({}, x_openclaw={"event": event})
    if last.get("type") not in ("done", "waiting"):
        _log(ticket, chat, last, last.get("status", 500), started)
        yield writer.error(last.get("status", 500), last.get("message", ""), last.get("code"))
        return
    writer.base["model"] = last.get("model") or model
    finish = "interrupted" if last["type"] == "waiting" else last.get("finish_reason") or "stop"
    yield writer.chunk({}, finish, x_openclaw=_extension(last, conversation))
    if include_usage:
        yield writer.usage(last.get("usage") or {})
    _log(ticket, chat, last, 200, started)
    yield SSE_DONE
