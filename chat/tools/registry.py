"""The built-in tools' code, by name: registered with ``@register_tool`` (the built-ins
in ``chat.tools.builtins``) or found in the ``openclaw.tools`` entry-point group (each
entry point names a ``BuiltinTool``). A ``Tool`` row of kind ``builtin`` configures one
of them (``sync_builtin_rows`` makes the missing rows).

A built-in is an async function ``(arguments, context) -> result``: the arguments
already validated against its schema, the result any JSON value (a string is given to
the model as it is; an ``Output`` gives the model a text apart from the value). It
raises ``ToolFailed`` with a message for the model when it cannot do what was asked.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "openclaw.tools"


class ToolFailed(Exception):
    """What a tool says went wrong, for the model (and the run's events) to see."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Output:
    """A result whose text for the model is not its value (a structured result that
    comes with its own rendering, as MCP tools give both)."""

    text: str
    value: Any


@dataclass(frozen=True)
class ToolContext:
    """Who a call is for: the user the run belongs to, the API key's prefix (if any),
    the conversation and the workflow whose agent calls it."""

    user: str = ""
    api_key: str = ""
    conversation_id: str = ""
    workflow: str = ""


Run = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]


@dataclass(frozen=True)
class BuiltinTool:
    """One built-in: its name, description (marked for translation), the JSON schema of
    its arguments, its defaults and its code."""

    name: str
    description: str
    parameters: dict[str, Any]
    run: Run
    timeout_s: float = 30.0
    requires_approval: bool = False


_registry: dict[str, BuiltinTool] = {}
_loaded_entry_points = False


def register_tool(name: str, *, description: str, parameters: dict[str, Any],
                  timeout_s: float = 30.0, requires_approval: bool = False
                  ) -> Callable[[Run], Run]:
    """Register the decorated async function as built-in tool ``name``."""

    def decorate(run: Run) -> Run:
        add(BuiltinTool(name, description, parameters, run, timeout_s, requires_approval))
        return run

    return decorate


def add(tool: BuiltinTool) -> None:
    found = _registry.get(tool.name)
    if found is not None and found.run is not tool.run:
        raise ValueError(f"tool {tool.name!r} is registered twice")
    _registry[tool.name] = tool


def _load_entry_points() -> None:
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            tool = entry.load()
            if not isinstance(tool, BuiltinTool):
                raise TypeError(f"{entry.value} is not a chat.tools.registry.BuiltinTool")
            add(tool)
        except Exception:  # a broken package must not take the others down
            logger.exception("tool entry point %s could not be loaded", entry.name)


def builtin_tools() -> dict[str, BuiltinTool]:
    """Every registered built-in (the package's own register when ``ChatConfig.ready()``
    imports ``chat.tools.builtins``; entry points on first use)."""
    _load_entry_points()
    return dict(_registry)


def get_builtin(name: str) -> BuiltinTool | None:
    return builtin_tools().get(name)
