"""A workflow run as a tool: the call's message is one turn of a new conversation of the
workflow, for the calling user, and the workflow's answer is the tool's result.

A run that stops at a human-approval node does not hang the agent: the tool answers at
once that it waits, naming the conversation and the run a person resumes. Imported by
``ChatConfig.ready()``, which registers the caller (``chat.tools.service`` never imports
this module: it would pull in the whole run service).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from typing import Any

from django.utils import translation
from django.utils.translation import gettext as _

from core import logging as log_context

from ..graph.service import arun_turn
from ..workflows.compiler import WorkflowError, aresolve
from .models import ToolKind
from .registry import ToolContext, ToolFailed
from .service import ToolSpec, register_caller

WORKFLOW_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"message": {
        "type": "string",
        "description": "What to send to the workflow, as a user's message to it."}},
    "required": ["message"],
}
"""The arguments of a workflow tool whose row names none (the admin fills it in)."""


def message_of(arguments: dict[str, Any]) -> str:
    """The user message a call sends: its ``message`` when that is all it has, else its
    arguments as JSON (a tool the operator gave a schema of its own)."""
    message = arguments.get("message")
    if isinstance(message, str) and set(arguments) == {"message"}:
        return message
    return json.dumps(arguments, ensure_ascii=False)


def result_of(slug: str, last: dict[str, Any]) -> Any:
    """The tool's result from the run's last event: the answer's text, or what a person
    must do for a run that waits; an error is the model's to hear (``ToolFailed``)."""
    kind = last.get("type")
    if kind == "done":
        return last.get("content") or ""
    if kind == "waiting":
        return {"status": "waiting", "conversation_id": last.get("conversation_id"),
                "run_id": last.get("run_id"), "message": _(
                    "The workflow “%(slug)s” waits for a person's approval (conversation "
                    "%(conversation)s, run %(run)s); its answer comes once they decide.")
                % {"slug": slug, "conversation": last.get("conversation_id"),
                   "run": last.get("run_id")}}
    raise ToolFailed(last.get("message") or _("The workflow “%(slug)s” gave no answer.")
                     % {"slug": slug})


async def _turn(slug: str, model: str, content: str, context: ToolContext,
                language: str, logged: dict[str, str]) -> dict[str, Any]:
    translation.activate(language)
    log_context.bind(**logged)
    return await arun_turn(conversation_id=None, user=context.user, content=content,
                           model=model, api_key=context.api_key, workflow=slug)


async def call_workflow(spec: ToolSpec, arguments: dict[str, Any],
                        context: ToolContext) -> Any:
    """Run ``spec``'s workflow as one turn and give its answer (see the module)."""
    slug = spec.workflow
    if not context.user:
        raise ToolFailed(_("A workflow runs for a user, and this call has none."))
    try:
        plan = await aresolve(slug) if slug else None
    except WorkflowError as exc:
        raise ToolFailed(exc.message) from exc
    if plan is None:
        raise ToolFailed(_("The tool “%(name)s” names no workflow.") % {"name": spec.name})
    if not plan.default_model:
        raise ToolFailed(_("The workflow “%(slug)s” has no default model to run with.")
                         % {"slug": slug})
    # Its own run, not a part of the caller's: in a fresh context, so the calling graph's
    # LangGraph config (its callbacks would file this run under the caller's node) and
    # the turn state the run service keeps in context variables cross neither way. The
    # language and the log fields are carried over.
    logged = {"request_id": log_context.request_id.get(),
              "key_prefix": log_context.key_prefix.get()}
    run = asyncio.get_running_loop().create_task(
        _turn(slug, plan.default_model, message_of(arguments), context,
              translation.get_language() or "en", logged),
        context=contextvars.Context())
    return result_of(slug, await run)


register_caller(ToolKind.WORKFLOW, call_workflow)
