"""The node types a workflow may use, filled by ``@register_node`` when the app is
ready (``chat.workflows.nodes``).

A node type is a factory: given a node's id and config (already validated) and the
compiler's context, it returns the function (or compiled subgraph) LangGraph runs.
Its ``schema`` (JSON Schema, draft 2020-12) describes its config: the admin and the
API validate with it (``chat.workflows.validation``) and the workflow editor renders
a form from it. ``check`` lists the problems a schema cannot say; ``branches`` names
the nodes a router may go to.

Schema extensions the editor understands: ``"x-node-ref": true`` (a string naming a
node of this workflow), ``"x-tool-ref": true`` (a list of tool names),
``"x-workflow-ref": true`` (a workflow's slug), ``"x-model-ref": true`` (a model's
name), ``"x-condition": true`` (a routing-rule condition) and ``"format": "textarea"``
(long text). Titles and descriptions are lazy translations: ``schema_for`` renders
them in the active language.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from django.utils.functional import Promise
from jsonschema import Draft202012Validator

if TYPE_CHECKING:  # django-stubs' alias, for type checking only (a dev dependency)
    from django_stubs_ext import StrOrPromise

Problems = list[str]
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def no_problems(config: dict[str, Any]) -> Problems:
    return []


def no_branches(config: dict[str, Any]) -> list[str]:
    return []


def config_schema(properties: dict[str, Any] | None = None, *, required: Sequence[str] = (),
                  additional: bool = False) -> dict[str, Any]:
    """The schema of a config object with these ``properties`` (``additional``: keys
    other than those allowed; left false, a misspelt key is refused)."""
    schema: dict[str, Any] = {"$schema": DRAFT, "type": "object",
                              "properties": properties or {},
                              "additionalProperties": additional}
    if required:
        schema["required"] = list(required)
    return schema


@dataclass(frozen=True)
class NodeType:
    """One registered node type."""

    name: str
    build: Callable[..., Any]
    check: Callable[[dict[str, Any]], Problems] = no_problems
    """The config's problems a schema cannot say (run once the schema holds)."""
    branches: Callable[[dict[str, Any]], list[str]] = no_branches
    """For routers: every node id the config may send the run to (else empty)."""
    terminal: bool = False
    """The run ends after this node (``end``): no outgoing edge allowed."""
    label: StrOrPromise = ""
    description: StrOrPromise = ""
    """A sentence saying what the node does, for the people who build workflows."""
    schema: dict[str, Any] = field(default_factory=lambda: config_schema(additional=True))
    """The config's JSON Schema (draft 2020-12; titles and descriptions lazy)."""

    @property
    def requires(self) -> tuple[str, ...]:
        """Config keys that must be present (the schema's ``required``)."""
        return tuple(self.schema.get("required", ()))

    @property
    def router(self) -> bool:
        """Its config names its next nodes: it has no edges of its own."""
        return self.branches is not no_branches

    @cached_property
    def validator(self) -> Draft202012Validator:
        """The schema's validator, made once (titles and descriptions play no part)."""
        return Draft202012Validator(self.schema)


_registry: dict[str, NodeType] = {}


def register_node(name: str, *, label: StrOrPromise = "", description: StrOrPromise = "",
                  schema: dict[str, Any] | None = None,
                  check: Callable[[dict[str, Any]], Problems] = no_problems,
                  branches: Callable[[dict[str, Any]], list[str]] = no_branches,
                  terminal: bool = False, requires: tuple[str, ...] = ()) -> Callable:
    """Register the decorated factory as node type ``name``. Without a ``schema`` any
    config object is accepted; ``requires`` adds keys to the schema's ``required``."""

    def decorate(build: Callable[..., Any]) -> Callable[..., Any]:
        if name in _registry and _registry[name].build is not build:
            raise ValueError(f"node type {name!r} is registered twice")
        config = dict(schema) if schema is not None else config_schema(additional=True)
        if requires:
            config["required"] = [*config.get("required", ()),
                                  *(key for key in requires
                                    if key not in config.get("required", ()))]
        _registry[name] = NodeType(
            name, build, check, branches, terminal, label or name,
            description or (build.__doc__ or "").strip().split("\n")[0], config)
        return build

    return decorate


def node_types() -> dict[str, NodeType]:
    """Every registered node type (the built-ins register when ``ChatConfig.ready()``
    imports ``chat.workflows.nodes``)."""
    return dict(_registry)


def get_node_type(name: str) -> NodeType | None:
    return node_types().get(name)


def rendered(value: Any) -> Any:
    """``value`` with every lazy translation in it rendered in the active language."""
    if isinstance(value, Promise):
        return str(value)
    if isinstance(value, dict):
        return {key: rendered(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rendered(item) for item in value]
    return value


def schema_for(node_type: NodeType | str) -> dict[str, Any]:
    """A node type's config schema in the active language (JSON-serialisable)."""
    found = get_node_type(node_type) if isinstance(node_type, str) else node_type
    if found is None:
        raise KeyError(node_type)
    return rendered(found.schema)


def describe(node_type: NodeType) -> dict[str, Any]:
    """A node type as the editor's API gives it, in the active language."""
    return {"type": node_type.name, "label": str(node_type.label),
            "description": str(node_type.description), "schema": schema_for(node_type),
            "terminal": node_type.terminal, "router": node_type.router}
