"""The tools a run may use and one call of a tool.

``specs_for`` reads the enabled ``Tool`` rows a principal may use (``ToolSpec``: plain
snapshots, nothing of the ORM reaches the run); ``acall`` validates a call's arguments
against the tool's schema, runs it under its timeout and always returns a
``ToolResult`` — a tool that raises, times out or whose server is down gives its error
to the model, never to the run.

The kinds are called by their own modules: built-ins here (``chat.tools.registry``),
MCP tools by ``chat.tools.mcp_client`` and workflows by ``chat.tools.workflow_tool``,
each registering its caller with ``register_caller`` when it is imported (the app's
``ready``), so this module needs neither the MCP SDK nor the run service.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from asgiref.sync import sync_to_async
from django.db.models import Q
from django.utils.translation import get_language
from django.utils.translation import gettext as _

from core.snapshot import VersionedSnapshot

from .models import Tool, ToolKind
from .registry import Output, ToolContext, ToolFailed, get_builtin

RESULT_MAX_CHARS = 16_000  # what the model is given of one result
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class ToolSpec:
    """One tool as a run sees it."""

    name: str
    kind: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: dict(EMPTY_SCHEMA),
                                       hash=False, compare=False)
    timeout_s: float = 30.0
    requires_approval: bool = False
    builtin: str = ""
    workflow: str = ""
    """The slug of the workflow a workflow tool runs."""
    server: int | None = None
    """The MCP server's id (an MCP tool)."""
    remote_name: str = ""

    def openai(self) -> dict[str, Any]:
        """The tool as OpenAI's ``tools`` list names it."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": self.parameters or dict(EMPTY_SCHEMA)}}


@dataclass
class ToolResult:
    """What a call gave: the text the model sees, whether it is an error, how long it
    took, and the value itself (JSON) when the tool returned one."""

    content: str
    is_error: bool = False
    duration_ms: float = 0.0
    value: Any = None


Caller = Callable[[ToolSpec, dict[str, Any], ToolContext], Awaitable[Any]]
_callers: dict[str, Caller] = {}


def register_caller(kind: str, caller: Caller) -> None:
    """``caller`` runs the tools of ``kind`` (raising ``ToolFailed`` for the model)."""
    _callers[kind] = caller


async def _call_builtin(spec: ToolSpec, arguments: dict[str, Any],
                        context: ToolContext) -> Any:
    builtin = get_builtin(spec.builtin or spec.name)
    if builtin is None:
        raise ToolFailed(_("The built-in tool “%(name)s” is not installed.")
                         % {"name": spec.builtin or spec.name})
    return await builtin.run(arguments, context)


register_caller(ToolKind.BUILTIN, _call_builtin)


# --- which tools ----------------------------------------------------------------------


def spec_of(tool: Tool) -> ToolSpec:
    return ToolSpec(name=tool.name, kind=tool.kind, description=tool.description or "",
                    parameters=tool.parameters or dict(EMPTY_SCHEMA),
                    timeout_s=tool.timeout_s, requires_approval=tool.requires_approval,
                    builtin=tool.builtin,
                    workflow=tool.workflow.slug if tool.workflow_id and tool.workflow else "",
                    server=tool.server_id, remote_name=tool.remote_name)


def usable(*, user: str = "", api_key: str = "", workflow: str = "",
           public: bool = False):
    """The enabled tools ``user`` (a username or ``key:<prefix>``), calling with the key
    of prefix ``api_key`` (if any), may use in ``workflow`` (a slug, "" for none)."""
    found = Tool.objects.filter(enabled=True).filter(
        Q(server__isnull=True) | Q(server__enabled=True)).filter(
        Q(workflow__isnull=True) | Q(workflow__enabled=True))
    if public:
        found = found.filter(public=True)
    # A tool with no one listed is everyone's; else the key, the user or a group of
    # theirs must be listed.
    anyone = Q(api_keys__isnull=True, users__isnull=True, groups__isnull=True)
    allowed = anyone
    if api_key:
        allowed |= Q(api_keys__prefix=api_key)
    if user and not user.startswith("key:"):
        allowed |= Q(users__username=user) | Q(groups__user__username=user)
    found = found.filter(allowed)
    if workflow:
        found = found.filter(Q(workflows__isnull=True) | Q(workflows__slug=workflow))
    else:
        found = found.filter(workflows__isnull=True)
    return found.select_related("workflow").distinct()


def specs_for(names: Iterable[str] | None, *, user: str = "", api_key: str = "",
              workflow: str = "", public: bool = False) -> list[ToolSpec]:
    """The usable tools among ``names`` (all usable ones when None), in ``names``'
    order; a name that is not usable is left out."""
    found = usable(user=user, api_key=api_key, workflow=workflow, public=public)
    if names is not None:
        names = list(dict.fromkeys(names))
        found = found.filter(name__in=names)
    specs = {tool.name: spec_of(tool) for tool in found}
    order = names if names is not None else sorted(specs)
    return [specs[name] for name in order if name in specs]


# --- this process's copy of who may use what ------------------------------------------

VERSION_KEY = "chat:tools:version"
KEPT = 10_000  # principals' tool lists a process remembers


class _Usable:
    """Tool lists by (names, user, key, workflow, public, language), as read under one
    version of the token; filled as runs ask."""

    def __init__(self, version: str | None = None):
        self.found: OrderedDict[tuple, list[ToolSpec]] = OrderedDict()


TOOLS: VersionedSnapshot[_Usable] = VersionedSnapshot(VERSION_KEY, _Usable,
                                                      thread_sensitive=False)
tools_changed = TOOLS.changed
"""Receiver of every change that may change a list (tools, MCP servers, workflows, keys,
users' groups, the tools' access lists): every process reads the lists again."""


async def aspecs_for(names: Iterable[str] | None, *, user: str = "", api_key: str = "",
                     workflow: str = "", public: bool = False) -> list[ToolSpec]:
    """``specs_for`` from this process's copy: no query unless something changed."""
    names = list(dict.fromkeys(names)) if names is not None else None
    key = (tuple(names) if names is not None else None, user, api_key, workflow, public,
           get_language())
    copy = await TOOLS.aget()
    found = copy.found.get(key)
    if found is None:
        found = copy.found[key] = await sync_to_async(specs_for)(
            names, user=user, api_key=api_key, workflow=workflow, public=public)
        while len(copy.found) > KEPT:
            copy.found.popitem(last=False)
    return found


# --- one call ---------------------------------------------------------------------------


def arguments_problem(spec: ToolSpec, arguments: Any) -> str | None:
    """Why ``arguments`` do not fit the tool's schema (None when they do)."""
    if not isinstance(arguments, dict):
        return _("The arguments must be a JSON object.")
    validator = _validator(json.dumps(spec.parameters or EMPTY_SCHEMA, sort_keys=True))
    if validator is None:
        return None  # the server's schema is broken, not the call: let the tool judge
    error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return _("Invalid arguments%(where)s: %(message)s") % {
        "where": f" ({where})" if where else "", "message": error.message}


@functools.lru_cache(maxsize=1024)
def _validator(schema: str) -> Any:
    """The checked validator of a schema (its JSON text), made once: checking the
    schema itself costs more than most calls."""
    parsed = json.loads(schema)
    cls = jsonschema.validators.validator_for(parsed)
    try:
        cls.check_schema(parsed)
    except jsonschema.SchemaError:
        return None
    return cls(parsed)


def as_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                            default=str)
    if len(text) > RESULT_MAX_CHARS:
        text = text[:RESULT_MAX_CHARS] + "…"
    return text


async def acall(spec: ToolSpec, arguments: Any, context: ToolContext) -> ToolResult:
    """Run one call of ``spec``; its errors are the result's (``is_error``)."""
    started = time.perf_counter()

    def took() -> float:
        return round((time.perf_counter() - started) * 1000, 2)

    problem = arguments_problem(spec, arguments)
    if problem is not None:
        return ToolResult(problem, True, took())
    caller = _callers.get(spec.kind)
    if caller is None:
        return ToolResult(_("Tools of kind “%(kind)s” cannot be called here.")
                          % {"kind": spec.kind}, True, took())
    try:
        value = await asyncio.wait_for(caller(spec, arguments, context), spec.timeout_s)
    except TimeoutError:
        return ToolResult(_("The tool “%(name)s” did not answer within %(seconds)g s.")
                          % {"name": spec.name, "seconds": spec.timeout_s}, True, took())
    except ToolFailed as exc:
        return ToolResult(exc.message, True, took())
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a tool's bug is the model's to hear about, not the run's
        return ToolResult(_("The tool “%(name)s” failed: %(error)s")
                          % {"name": spec.name, "error": f"{exc.__class__.__name__}: {exc}"},
                          True, took())
    if isinstance(value, Output):
        return ToolResult(as_text(value.text or value.value), False, took(), value.value)
    return ToolResult(as_text(value), False, took(), value)
