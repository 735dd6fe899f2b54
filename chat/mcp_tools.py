"""What OpenClaw's ``/mcp`` server (``chat.mcp_server``) offers an API key, and one call.

Two kinds of MCP tools:

- **every published workflow** (an enabled ``Workflow``) as ``workflow_<slug>``: one
  call runs one turn of a conversation through the run service, as ``/v1`` does for
  ``model: "workflow/<slug>"`` (``chat.v1.workflows``): the same user (the key's
  ``key_identity``), the same scope checks (``check_scope``: a key whose scope lists
  models and workflows sees only the workflows it lists, and may pick only the models it
  lists besides the workflow's own), the same answer — the text, and
  ``structuredContent`` with the conversation's id to go on with. A run that stops at a
  human-approval node answers at once with ``status: "waiting"`` and how to resume it
  (the same tool with ``conversation_id`` and ``resume``), so an MCP client never hangs
  on a person;
- **the tools an operator marked public** (``Tool.public``) that the key may use
  (``chat.tools.service.specs_for``), called through ``service.acall``. A key with a
  scope (``allowed_models``: it was made for those models and workflows) gets only the
  tools that name it, not those open to everyone. A tool that asks a person's approval
  before each call is not offered: a direct MCP call would skip it.

The prefix ``workflow_`` is the workflows': a public tool whose name starts with it is not
offered (so no tool hides a workflow, now or once one of that slug is published).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.utils.translation import gettext as _
from mcp.shared.exceptions import MCPError

from core.text import uuid_id
from routing.admission import check_scope
from routing.key_models import ApiKey
from routing.keys import KeyRefused
from routing.usage import log_usage

from .conversations import key_identity
from .graph.service import arun_resume, arun_turn, waiting_runs
from .models import Workflow
from .tools.models import Tool, ToolKind
from .tools.registry import ToolContext, get_builtin
from .tools.service import ToolSpec, acall, arguments_problem, specs_for

PREFIX = "workflow_"
NAME_MAX = 64  # what MCP clients (and the models behind them) accept as a tool name
UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
RESUME_ACTIONS = ["approve", "edit", "reject"]


def tool_name(slug: str) -> str:
    """A workflow's tool name: ``workflow_<slug>`` in ``[A-Za-z0-9_-]{1,64}``; a slug too
    long for it keeps its start and ends with a digest of the whole, so names stay
    distinct."""
    name = PREFIX + UNSAFE.sub("_", slug)
    if len(name) <= NAME_MAX:
        return name
    digest = hashlib.sha256(slug.encode()).hexdigest()[:8]
    return f"{name[:NAME_MAX - len(digest) - 1]}_{digest}"


def in_scope(key: ApiKey, slug: str, model: str | None = None,
             own_model: str | None = None) -> bool:
    """Whether ``check_scope`` lets ``key`` run workflow ``slug`` (with ``model``)."""
    try:
        check_scope(key, model, workflow=slug, own_model=own_model)
    except KeyRefused:
        return False
    return True


@dataclass(frozen=True)
class WorkflowTool:
    """A published workflow as an MCP tool."""

    name: str
    slug: str
    title: str
    description: str
    default_model: str

    def schema(self) -> dict[str, Any]:
        """Its arguments: the message, the conversation to go on with, the model (required
        when the workflow has no default), and the decision that resumes a waiting run."""
        model = (_("The model to run it with (default: %(model)s).")
                 % {"model": self.default_model} if self.default_model
                 else _("The model to run it with (this workflow has no default)."))
        schema: dict[str, Any] = {"type": "object", "properties": {
            "message": {"type": "string", "description": _(
                "The user's message for this turn (ignored when resuming).")},
            "conversation_id": {"type": "string", "description": _(
                "Go on with this conversation (the id an earlier call returned); leave "
                "it out to start a new one.")},
            "model": {"type": "string", "description": model},
            "resume": {"type": "object", "description": _(
                "Resume the conversation's run that waits for approval: “approve”, "
                "“edit” with “content”, or “reject” with a “reason”."),
                "properties": {"action": {"type": "string", "enum": RESUME_ACTIONS},
                               "content": {"type": "string"},
                               "reason": {"type": "string"}},
                "required": ["action"]},
        }, "required": ["message"] if self.default_model else ["message", "model"]}
        return schema

    def listed(self) -> types.Tool:
        return types.Tool(name=self.name, title=self.title,
                          description=self.description or self.title,
                          input_schema=self.schema())


@dataclass(frozen=True)
class Catalogue:
    """The tools one key sees, by name."""

    workflows: dict[str, WorkflowTool]
    tools: dict[str, ToolSpec]

    def listed(self) -> list[types.Tool]:
        return [tool.listed() for tool in self.workflows.values()] + [
            types.Tool(name=spec.name, description=spec.description,
                       input_schema=spec.parameters) for spec in self.tools.values()]


def _workflow_tool(row: Workflow) -> WorkflowTool:
    return WorkflowTool(tool_name(row.slug), row.slug, row.name or row.slug,
                        row.description or "", row.default_model or "")


def _published():
    return Workflow.objects.filter(enabled=True).only(
        "slug", "name", "description", "default_model")


def workflow_named(name: str) -> WorkflowTool | None:
    """The enabled workflow whose tool is ``name`` (whoever asks: the caller checks the
    scope), or None."""
    if not name.startswith(PREFIX):
        return None
    close_old_connections()
    found = _published().filter(slug=name[len(PREFIX):]).first()
    if found is None and len(name) == NAME_MAX:  # a long slug's digested name
        start = name[len(PREFIX):NAME_MAX - 9]
        found = next((row for row in _published().filter(slug__startswith=start)
                      if tool_name(row.slug) == name), None)
    return _workflow_tool(found) if found is not None else None


aworkflow_named = sync_to_async(workflow_named)


def _offered(key: ApiKey, spec: ToolSpec) -> bool:
    """A public tool the key may be offered: no approval to skip, its code installed,
    and (a workflow as a tool) its workflow in the key's scope."""
    if spec.requires_approval:
        return False
    if spec.kind == ToolKind.BUILTIN and get_builtin(spec.builtin or spec.name) is None:
        return False
    return spec.kind != ToolKind.WORKFLOW or in_scope(key, spec.workflow)


def public_tools(key: ApiKey, names: list[str] | None = None) -> dict[str, ToolSpec]:
    """The public tools ``key`` may call (among ``names``), by name. A key with a scope
    gets only those that name it (``Tool.api_keys``), not those open to everyone."""
    specs = [spec for spec in specs_for(names, user=key_identity(key), api_key=key.prefix,
                                        public=True)
             if not spec.name.startswith(PREFIX) and _offered(key, spec)]
    if key.allowed_models and specs:
        named = set(Tool.objects.filter(api_keys=key, name__in=[s.name for s in specs])
                    .values_list("name", flat=True))
        specs = [spec for spec in specs if spec.name in named]
    return {spec.name: spec for spec in specs}


def catalogue(key: ApiKey) -> Catalogue:
    """Everything ``key`` sees on ``/mcp`` (a thread: it reads the database)."""
    close_old_connections()
    workflows = [_workflow_tool(row) for row in _published()]
    return Catalogue({tool.name: tool for tool in workflows if in_scope(key, tool.slug)},
                     public_tools(key))


acatalogue = sync_to_async(catalogue)


# --- one call ---------------------------------------------------------------------------


def text_result(text: str, *, error: bool = False,
                structured: dict[str, Any] | None = None) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)],
                                structured_content=structured, is_error=error)


@dataclass
class Called:
    """A call's result and the tokens it used (what the admission's ticket settles)."""

    result: types.CallToolResult
    tokens: int = 0


async def call(key: ApiKey, name: str, arguments: dict[str, Any]) -> Called:
    """Call tool ``name`` for ``key``; an unknown (or hidden) tool is a protocol error."""
    workflow = await aworkflow_named(name)
    if workflow is not None and in_scope(key, workflow.slug):
        return await call_workflow(key, workflow, arguments)
    tools = await sync_to_async(public_tools)(key, [name])
    spec = tools.get(name)
    if spec is None:
        raise MCPError(types.INVALID_PARAMS, _("Unknown tool: %(name)s") % {"name": name})
    identity = await sync_to_async(key_identity)(key)
    done = await acall(spec, arguments, ToolContext(user=identity, api_key=key.prefix))
    value = done.value if isinstance(done.value, dict) else None
    return Called(text_result(done.content, error=done.is_error, structured=value))


async def call_workflow(key: ApiKey, tool: WorkflowTool, arguments: dict[str, Any]) -> Called:
    """One turn (or resume) of the workflow, its last event as the tool's result."""
    spec = ToolSpec(name=tool.name, kind=ToolKind.WORKFLOW, parameters=tool.schema(),
                    workflow=tool.slug)
    problem = arguments_problem(spec, arguments)
    conversation = arguments.get("conversation_id") or None
    if problem is None and conversation is not None and uuid_id(conversation) is None:
        problem = _("“conversation_id” must be a conversation's id (a UUID).")
    if problem is not None:
        return Called(text_result(problem, error=True))
    conversation = uuid_id(conversation) if conversation else None
    identity = await sync_to_async(key_identity)(key)
    started = time.perf_counter()
    if "resume" in arguments:
        if conversation is None:
            return Called(text_result(_("A resume needs the conversation's id."), error=True))
        refusal = await sync_to_async(_not_resumable)(tool, conversation, identity)
        if refusal is not None:
            return Called(text_result(refusal, error=True))
        last = await arun_resume(conversation_id=conversation, user=identity,
                                 resume=arguments["resume"])
    else:
        model = arguments.get("model") or tool.default_model
        if not model:
            return Called(text_result(_("Workflow “%(slug)s” has no default model: name one "
                                        "in “model”.") % {"slug": tool.slug}, error=True))
        if not in_scope(key, tool.slug, model, tool.default_model):
            return Called(text_result(_("This API key may not use the model “%(model)s”.")
                                      % {"model": model}, error=True))
        last = await arun_turn(conversation_id=conversation, user=identity,
                               content=arguments["message"], model=model,
                               api_key=key.prefix, workflow=tool.slug)
    conversation = last.get("conversation_id") or conversation
    _log(key, last, started)
    tokens = (last.get("usage") or {}).get("total_tokens", 0)
    return Called(outcome(tool, last, conversation), int(tokens or 0))


def _not_resumable(tool: WorkflowTool, conversation: str, identity: str) -> str | None:
    """Why this tool may not resume the conversation's waiting run (another workflow's
    run), or None; a conversation with nothing waiting is the run service's to say."""
    close_old_connections()
    for run in waiting_runs(identity):
        if run["conversation_id"] == conversation and run["workflow"] not in (None, tool.slug):
            return _("This conversation's run belongs to another workflow.")
    return None


def _log(key: ApiKey, last: dict[str, Any], started: float) -> None:
    usage = last.get("usage") or {}
    kind = last.get("type")
    log_usage(key_prefix=key.prefix, user=str(key.owner_id or ""), model=last.get("model", ""),
              instance=(last.get("route") or {}).get("instance"),
              tokens_in=usage.get("prompt_tokens", 0),
              tokens_out=usage.get("completion_tokens", 0),
              latency_ms=(time.perf_counter() - started) * 1000,
              status=200 if kind in ("done", "waiting") else last.get("status", 500),
              endpoint="mcp-workflow")


def outcome(tool: WorkflowTool, last: dict[str, Any],
            conversation: str | None) -> types.CallToolResult:
    """A run's last event as an MCP result: the answer, a wait for approval (with how to
    resume it) or an error (``isError``)."""
    kind = last.get("type")
    if kind == "done":
        return text_result(str(last.get("content", "")), structured={
            "conversation_id": conversation, "status": "done", "model": last.get("model"),
            "message_id": last.get("message_id")})
    if kind == "waiting":
        resume = {"conversation_id": conversation, "message": "",
                  "resume": {"action": "approve"}}
        text = _("The run waits for a person's approval. To go on, call %(tool)s with "
                 "%(arguments)s (or “edit” with “content”, or “reject” with a “reason”).") % {
            "tool": tool.name, "arguments": json.dumps(resume, ensure_ascii=False)}
        return text_result(text, structured={
            "conversation_id": conversation, "status": "waiting", "run_id": last.get("run_id"),
            "interrupts": last.get("interrupts", []),
            "resume": {"tool": tool.name, "arguments": resume, "actions": RESUME_ACTIONS}})
    message = last.get("message") or _("The run produced nothing.")
    return text_result(str(message), error=True, structured={
        "conversation_id": conversation, "status": "error",
        "code": last.get("code", "internal_error")})
