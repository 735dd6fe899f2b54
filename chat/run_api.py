"""The workflow editor's run panel API (JSON, session auth; CSRF on POST): a workflow's
runs, a run's steps, and a branch replayed from a step. The services are in
``chat.workflows.steps``; the branch then runs on over the websocket (``continue``,
docs/websocket.md).

* ``GET  /studio/api/workflows/<slug>/runs/`` — the signed-in user's conversations on
  the workflow (permission ``chat.view_workflow``).
* ``GET  /studio/api/conversations/<id>/steps/`` — the state before and after each node
  (``?turn=N``: that turn's); the user's own conversations only.
* ``POST /studio/api/conversations/<id>/replay/`` ``{"checkpoint_id"}`` — 201 with the
  branch.

Async views: the checkpoints are read on the server's event loop, with its saver. Served
through WSGI (Django's test client), a view runs in an event loop of its own, which
ends with the request: the saver it opened there is closed before it returns.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from .conversations import ConversationError
from .editor_api import READ, may
from .graph.checkpointer import close_saver
from .studio import json_body
from .workflows.compiler import WorkflowError
from .workflows.steps import areplay, asteps, list_runs

T = TypeVar("T")


def _error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


async def _signed_in(request: HttpRequest) -> Any:
    """The signed-in user, or None."""
    user = await request.auser()
    return user if user.is_authenticated else None


def _not_signed_in() -> JsonResponse:
    return _error("not_signed_in", _("Sign in to use the workflow editor."), 401)


async def _closing(request: HttpRequest, work: Awaitable[T]) -> T:
    """``work``'s result; under WSGI, this loop's saver closed after it."""
    try:
        return await work
    finally:
        if isinstance(request, WSGIRequest):
            await close_saver()


def _refusal(exc: ConversationError | WorkflowError) -> JsonResponse:
    return _error(exc.code, exc.message, exc.status or 400)


@require_GET
async def runs(request: HttpRequest, slug: str) -> JsonResponse:
    """The signed-in user's runs (conversations) of workflow ``slug``, newest first."""
    user = await _signed_in(request)
    if user is None:
        return _not_signed_in()
    if not await sync_to_async(may)(user, READ):  # the editor's own rule
        return _error("forbidden", _("You may not view workflows."), 403)
    try:
        found = await sync_to_async(list_runs)(slug, user.get_username())
        return JsonResponse({"runs": found})
    except WorkflowError as exc:
        return _refusal(exc)


@require_GET
async def steps(request: HttpRequest, conversation_id: str) -> JsonResponse:
    """The conversation's steps, oldest first (``chat.workflows.steps.asteps``)."""
    user = await _signed_in(request)
    if user is None:
        return _not_signed_in()
    turn = request.GET.get("turn")
    if turn is not None and not (turn.isdigit() and len(turn) < 10):
        return _error("invalid_turn", _("“turn” must be a turn's number."), 400)
    try:
        found = await _closing(request, asteps(
            conversation_id=conversation_id, user=user.get_username(),
            turn=int(turn) if turn is not None else None))
    except ConversationError as exc:
        return _refusal(exc)
    return JsonResponse({"steps": found})


@require_POST
async def replay(request: HttpRequest, conversation_id: str) -> JsonResponse:
    """A branch of the conversation from the step ``{"checkpoint_id"}``: 201
    ``{"conversation_id", "checkpoint_id", "next"}``; send ``continue`` on it."""
    user = await _signed_in(request)
    if user is None:
        return _not_signed_in()
    try:
        branch = await _closing(request, areplay(
            conversation_id=conversation_id, user=user.get_username(),
            checkpoint_id=json_body(request).get("checkpoint_id")))
    except ConversationError as exc:
        return _refusal(exc)
    return JsonResponse(branch, status=201)
