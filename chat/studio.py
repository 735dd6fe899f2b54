"""The studio: its services (the conversations a user sees, history, rename, delete,
fork, regenerate, the registry's models, the tools a user may enable, the graph's shape,
memories) and its page views (``/studio/``, a small JSON API the page calls). The
websocket side is ``chat.consumers``; the protocol is docs/websocket.md."""

from __future__ import annotations

import json
import logging
import uuid
from functools import cache
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from core.text import lone_surrogate_at
from inference.kinds import NON_CHAT_ENGINES, EngineKind
from routing.admission import user_quota
from routing.models import ModelEndpoint

from .conversations import (
    ConversationError,
    forget_window,
    matching_titles,
    message_dict,
    text_of,
)
from .graph.graph import compile_graph
from .graph.service import waiting_runs
from .models import Conversation, MemoryItem, Message, Role, Workflow
from .tools.service import usable
from .workflows.compiler import compile_plan, plan_of

logger = logging.getLogger(__name__)

BUILT_IN = "conversation"  # the built-in graph's name in the protocol (same as no workflow)
LIST_LIMIT = 200
TITLE_MAX = 200


# --- services --------------------------------------------------------------------------


def conversation_of(conversation_id: Any, user: str) -> Conversation:
    """``user``'s conversation ``conversation_id``, or ``ConversationError``."""
    try:
        return Conversation.objects.get(pk=uuid.UUID(str(conversation_id)), user=user)
    except (Conversation.DoesNotExist, ValueError, TypeError, AttributeError):
        raise ConversationError("conversation_not_found", _(
            "No conversation “%(id)s” for this user.") % {"id": conversation_id}) from None


def list_conversations(user: str, query: str = "") -> list[dict[str, Any]]:
    """The user's conversations, latest first; ``query`` filters by title or model
    (titles are encrypted, so they are matched in Python: ``matching_titles``)."""
    rows = Conversation.objects.filter(user=user)
    if query.strip():
        rows = rows.filter(Q(pk__in=matching_titles(rows, query))
                           | Q(model__icontains=query.strip()))
    return [{"id": str(c.pk), "title": c.title or _("New chat"), "model": c.model,
             "turns": c.turns, "updated": c.updated_at.isoformat()}
            for c in rows.order_by("-updated_at")[:LIST_LIMIT]]


def history(conversation_id: Any, user: str) -> dict[str, Any]:
    """The conversation and its messages (what a reconnect shows)."""
    conversation = conversation_of(conversation_id, user)
    messages = [{**message_dict(m), "model": m.model, "in_context": m.in_context,
                 "latency_ms": m.latency_ms,
                 "usage": {"prompt_tokens": m.prompt_tokens,
                           "completion_tokens": m.completion_tokens}}
                for m in conversation.messages.order_by("turn", "id")]
    waiting = [run for run in waiting_runs(user) if run["conversation_id"] == str(conversation.pk)]
    return {"id": str(conversation.pk), "title": conversation.title,
            "model": conversation.model, "messages": messages,
            "waiting": waiting[0] if waiting else None}


def rename_conversation(conversation_id: Any, user: str, title: Any) -> dict[str, Any]:
    if not isinstance(title, str) or not title.strip() or "\x00" in title \
            or lone_surrogate_at(title) is not None:  # neither can be stored as text
        raise ConversationError("invalid_title", _("A title must be a non-empty string."))
    conversation = conversation_of(conversation_id, user)
    conversation.title = " ".join(title.split())[:TITLE_MAX]
    conversation.save(update_fields=["title", "updated_at"])
    return {"id": str(conversation.pk), "title": conversation.title}


def delete_conversation(conversation_id: Any, user: str) -> None:
    conversation_of(conversation_id, user).delete()


def fork_conversation(conversation_id: Any, user: str, message_id: Any) -> dict[str, Any]:
    """A new conversation holding this one's messages up to ``message_id`` (its whole
    turn when it is the user's message, so the branch starts from the answer or can be
    continued with a new question)."""
    source = conversation_of(conversation_id, user)
    try:
        until = source.messages.get(pk=_pk(message_id))
    except Message.DoesNotExist:
        raise ConversationError("message_not_found", _(
            "No message “%(id)s” in this conversation.") % {"id": message_id}) from None
    kept = [m for m in source.messages.order_by("turn", "id")
            if m.turn < until.turn or m.turn == 0 or (m.turn == until.turn and m.pk <= until.pk)]
    with transaction.atomic():
        fork = Conversation.objects.create(
            user=user, owner_id=source.owner_id, model=source.model,
            title=(_("%(title)s (branch)") % {"title": source.title})[:TITLE_MAX],
            turns=max((m.turn for m in kept), default=0))
        Message.objects.bulk_create([Message(
            conversation=fork, turn=m.turn, role=m.role, content=m.content,
            content_format=m.content_format, model=m.model, prompt_tokens=m.prompt_tokens,
            completion_tokens=m.completion_tokens, latency_ms=m.latency_ms,
            in_context=m.in_context, created_at=m.created_at) for m in kept])
    return {"id": str(fork.pk), "title": fork.title}


def regenerate_source(conversation_id: Any, user: str) -> dict[str, Any]:
    """The last user message, to be asked again: it and its answer leave the context
    (later turns see only the new answer); its content is returned for a new turn."""
    conversation = conversation_of(conversation_id, user)
    last = conversation.messages.filter(role=Role.USER, in_context=True).order_by(
        "-turn", "-id").first()
    if last is None:
        raise ConversationError("nothing_to_regenerate", _(
            "This conversation has no message to answer again."))
    conversation.messages.filter(turn=last.turn).update(in_context=False)
    forget_window(str(conversation.pk))
    return {"content": last.value, "turn": last.turn, "text": text_of(last.value)}


def keep_stopped_answer(conversation_id: str, content: str, model: str) -> int | None:
    """Store what was streamed of an answer that was stopped, as the reply to the
    conversation's last question (as Open WebUI does), so a reload shows it."""
    question = Message.objects.filter(conversation_id=conversation_id, role=Role.USER) \
        .order_by("-turn", "-id").first()
    if question is None or not content:
        return None
    answer = Message.objects.create(conversation_id=conversation_id, turn=question.turn,
                                    role=Role.ASSISTANT, content=content, model=model)
    Conversation.objects.filter(pk=conversation_id).update(updated_at=answer.created_at)
    return answer.pk


def available_models() -> list[dict[str, str]]:
    """The registry's enabled models a conversation can use, one entry per name (models
    of kinds that cannot chat, embeddings, are left out); label and description in the
    active language (django-modeltranslation falls back to English when empty). The echo
    engine is labelled as the wiring check it is."""
    seen: dict[str, dict[str, str]] = {}
    chat = ModelEndpoint.objects.filter(enabled=True).exclude(engine__in=NON_CHAT_ENGINES)
    for endpoint in chat.order_by("name", "pk"):
        label = endpoint.display_name
        if not label and endpoint.engine == EngineKind.ECHO:
            label = _("%(name)s (wiring check)") % {"name": endpoint.name}
        seen.setdefault(endpoint.name, {"name": endpoint.name,
                                        "label": label or endpoint.name,
                                        "description": endpoint.description,
                                        "engine": endpoint.engine})
    return list(seen.values())


def default_model(models: list[dict[str, str]]) -> str:
    """The studio's first choice among ``models``: a configured chat model (the first by
    name) over echo, which only checks the wiring; "" when there is none."""
    real = [m for m in models if m["engine"] != EngineKind.ECHO]
    return (real or models)[0]["name"] if models else ""


def _shape(graph) -> dict[str, Any]:
    drawable = graph.get_graph()
    return {"nodes": [node_id for node_id in drawable.nodes],
            "edges": [{"source": e.source, "target": e.target, "conditional": e.conditional}
                      for e in drawable.edges]}


@cache
def graph_shape() -> dict[str, Any]:
    """The built-in conversation graph's nodes and edges, for drawing."""
    return _shape(compile_graph())


def workflow_shape(workflow: Workflow) -> dict[str, Any]:
    """An admin-defined workflow's nodes and edges (the built-in graph's if it does not
    compile: the admin reports why)."""
    try:
        return _shape(compile_plan(plan_of(workflow)))
    except Exception:
        logger.warning("workflow %s does not compile for drawing", workflow.slug,
                       exc_info=True)
        return graph_shape()


def workflows() -> list[dict[str, Any]]:
    """The workflows a turn can pick: the default (the conversation's own, else the
    admin's default workflow, else the built-in graph), then every enabled one; each
    with its graph's shape."""
    enabled = list(Workflow.objects.filter(enabled=True).order_by("slug"))
    default = next((w for w in enabled if w.is_default), None)
    listed = [{"name": "", "label": _("Default workflow"),
               "graph": workflow_shape(default) if default else graph_shape()}]
    listed += [{"name": w.slug, "label": w.name or w.slug, "graph": workflow_shape(w)}
               for w in enabled]
    return listed


def usable_tools(user: str) -> list[dict[str, Any]]:
    """The tools ``user`` may enable for a conversation (the studio's tools picker), by
    name: the enabled ones the admin lets them use in any workflow; the description in
    the active language (django-modeltranslation falls back to English when empty)."""
    return [{"name": tool.name, "description": tool.description or "", "kind": tool.kind,
             "kind_label": str(tool.get_kind_display()),
             "requires_approval": tool.requires_approval}
            for tool in usable(user=user).order_by("name")]


def delete_memory(memory_id: Any, user: str) -> None:
    deleted, _rows = MemoryItem.objects.filter(pk=_pk(memory_id), user=user).delete()
    if not deleted:
        raise ConversationError("memory_not_found", _("No such memory."))


def _pk(value: Any) -> int:
    """A row id from client input: a positive 64-bit integer (or its digits), else -1,
    which matches nothing (never a database error for an out-of-range number)."""
    if isinstance(value, str) and value.isdigit() and len(value) < 19:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value
    return -1


# --- page views ------------------------------------------------------------------------


def _identity(request: HttpRequest) -> str:
    return request.user.get_username()


def _refusal(exc: ConversationError) -> JsonResponse:
    status = 404 if exc.code.endswith("not_found") else 400
    return JsonResponse({"error": {"code": exc.code, "message": exc.message}}, status=status)


def json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@login_required
@require_GET
def page(request: HttpRequest) -> HttpResponse:
    """The studio page; everything else comes from the websocket and the API below.
    ``?lang=en|zh-hans`` switches the language (remembered in Django's cookie)."""
    language = request.GET.get("lang")
    if language in dict(settings.LANGUAGES):
        response = redirect(request.path)
        response.set_cookie(settings.LANGUAGE_COOKIE_NAME, language,
                            max_age=settings.LANGUAGE_COOKIE_AGE or 365 * 24 * 3600,
                            samesite="Lax", secure=settings.SESSION_COOKIE_SECURE)
        return response
    models = available_models()
    config = {"models": models, "default_model": default_model(models),
              "workflows": workflows(),
              "user": _identity(request), "quota": user_quota(request.user),
              "language": translation.get_language(), "csrf": get_token(request)}
    return render(request, "studio/index.html", {"config": config})


@login_required
@require_GET
def conversations(request: HttpRequest) -> JsonResponse:
    query = request.GET.get("q", "")
    if "\x00" in query:  # no text holds NUL (PostgreSQL refuses it)
        return _refusal(ConversationError("invalid_query", _("“q” must be text to search "
                                                             "for.")))
    return JsonResponse({"conversations": list_conversations(_identity(request), query)})


@login_required
def conversation(request: HttpRequest, conversation_id: str) -> JsonResponse:
    """GET: its history; POST ``{"title"}``: rename; DELETE: delete."""
    user = _identity(request)
    try:
        if request.method == "GET":
            return JsonResponse(history(conversation_id, user))
        if request.method == "POST":
            return JsonResponse(rename_conversation(conversation_id, user,
                                                    json_body(request).get("title")))
        if request.method == "DELETE":
            delete_conversation(conversation_id, user)
            return JsonResponse({"deleted": conversation_id})
    except ConversationError as exc:
        return _refusal(exc)
    return JsonResponse({"error": {"code": "method_not_allowed",
                                   "message": _("Method not allowed.")}}, status=405)


@login_required
@require_POST
def memory_delete(request: HttpRequest, memory_id: int) -> JsonResponse:
    try:
        delete_memory(memory_id, _identity(request))
    except ConversationError as exc:
        return _refusal(exc)
    return JsonResponse({"deleted": memory_id})


@login_required
@require_GET
def tools(request: HttpRequest) -> JsonResponse:
    """The tools the signed-in user may enable for a conversation (``usable_tools``); a
    ``message`` frame's ``tools`` names those the user picked."""
    return JsonResponse({"tools": usable_tools(_identity(request))})


@login_required
@require_GET
def quota(request: HttpRequest) -> JsonResponse:
    """The signed-in user's studio quota as its bar shows it (``null``: none)."""
    return JsonResponse({"quota": user_quota(request.user)})
