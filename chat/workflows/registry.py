"""The node types a workflow may use, filled by ``@register_node`` when the app is
ready (``chat.workflows.nodes``).

A node type is a factory: given a node's id and config (already validated) and the
compiler's context, it returns the function (or compiled subgraph) LangGraph runs.
``check`` lists a config's problems; ``branches`` names the nodes a router may go to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Problems = list[str]


def no_problems(config: dict[str, Any]) -> Problems:
    return []


def no_branches(config: dict[str, Any]) -> list[str]:
    return []


@dataclass(frozen=True)
class NodeType:
    """One registered node type."""

    name: str
    build: Callable[..., Any]
    check: Callable[[dict[str, Any]], Problems] = no_problems
    branches: Callable[[dict[str, Any]], list[str]] = no_branches
    """For routers: every node id the config may send the run to (else empty)."""
    terminal: bool = False
    """The run ends after this node (``end``): no outgoing edge allowed."""
    description: str = ""
    requires: tuple[str, ...] = field(default=())
    """Config keys that must be present."""


_registry: dict[str, NodeType] = {}


def register_node(name: str, *, check: Callable[[dict[str, Any]], Problems] = no_problems,
                  branches: Callable[[dict[str, Any]], list[str]] = no_branches,
                  terminal: bool = False, requires: tuple[str, ...] = ()) -> Callable:
    """Register the decorated factory as node type ``name``."""

    def decorate(build: Callable[..., Any]) -> Callable[..., Any]:
        if name in _registry and _registry[name].build is not build:
            raise ValueError(f"node type {name!r} is registered twice")
        _registry[name] = NodeType(name, build, check, branches, terminal,
                                   (build.__doc__ or "").strip().split("\n")[0], requires)
        return build

    return decorate


def node_types() -> dict[str, NodeType]:
    """Every registered node type (the built-ins register when ``ChatConfig.ready()``
    imports ``chat.workflows.nodes``)."""
    return dict(_registry)


def get_node_type(name: str) -> NodeType | None:
    return node_types().get(name)
