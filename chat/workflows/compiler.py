"""Compile workflows to LangGraph ``StateGraph``s on the conversation graph's state.

A run first finds its ``Plan`` (the workflow, and those it includes as sub-workflows,
at their current versions); the compiled graph is cached per checkpointer under the
plan's versions, so an edit in the admin (``version`` + 1) is compiled on the next run
in every process, without a restart. ``aresolve`` keeps the plans (and which workflow
each conversation is pinned to) per process behind a version token that any change
to a workflow or a pin replaces: a turn finds its plan without a query.

A run may also ask for one of the workflow's saved versions (``aresolve_version``: the
editor's Run tab runs the version open on its canvas, a draft included): its definition
replaces the live one for that run, under a cache key of its own.

A run's input resets the previous turn's values (``turn_start``), so a workflow starts
at its entry node. After each node the run ends if the state holds an error; otherwise
it follows the node's edge, its router's choice, or ends (no edge, ``end``).
"""

from __future__ import annotations

import enum
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from core.snapshot import VersionedSnapshot

from ..graph import nodes as conversation
from ..graph.context import Context
from ..graph.graph import Builder, Graph, NodeGroup
from ..graph.state import State
from ..models import Conversation, DoubleTexting, Workflow, WorkflowVersion
from . import nodes
from .registry import get_node_type
from .validation import branches

CACHE_SIZE = 64  # compiled graphs kept per checkpointer (old versions fall out)


class WorkflowError(Exception):
    """A workflow that cannot run: a code and a message for the caller."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class Plan:
    """A workflow as one run compiles it: its definition and those of the workflows it
    includes, by slug, at the versions read."""

    workflow_id: int
    slug: str
    definitions: dict[str, dict[str, Any]] = field(hash=False, compare=False)
    versions: tuple[tuple[str, int, int], ...] = ()
    """``(slug, id, version)`` of each workflow compiled (a re-created slug is new)."""
    double_texting: str = DoubleTexting.ENQUEUE
    default_model: str = ""
    live_version: int | None = None
    """The workflow's version that this run runs (``Workflow.live_version``, or the
    saved version asked for): recorded on its waiting run and in each checkpoint's
    metadata."""
    saved: bool = False
    """Runs a saved version (``plan_at``), not necessarily the live definition."""

    @property
    def key(self) -> tuple[tuple[Any, ...], ...]:
        """The compiled graph's cache key. A saved version's is ``(slug, id, "v", N)``
        (versions never change) with its sub-workflows' versions: never a live plan's."""
        if not self.saved:
            return self.versions
        return ((self.slug, self.workflow_id, "v", self.live_version), *self.versions[1:])


def plan_of(workflow: Workflow, saved: WorkflowVersion | None = None) -> Plan:
    """``workflow`` and, recursively, the workflows its sub-workflow nodes run;
    ``saved``: one of its versions, whose definition runs instead of the live one
    (its sub-workflows still at their live definitions)."""
    own = saved.definition if saved is not None else workflow.definition
    definitions = {workflow.slug: own}
    versions = [(workflow.slug, workflow.pk, workflow.version)]
    todo = [own]
    while todo:
        for node in todo.pop().get("nodes", []):
            if node.get("type") != "sub_workflow":
                continue
            # Validated on save: a sub-workflow's config names its workflow's slug.
            slug = cast(str, (node.get("config") or {}).get("workflow"))
            if slug in definitions:
                continue
            inner = Workflow.objects.filter(slug=slug, enabled=True).first()
            if inner is None:
                raise WorkflowError("workflow_not_found", _(
                    "Workflow “%(slug)s” (a sub-workflow) does not exist or is disabled.")
                    % {"slug": slug}, 404)
            definitions[slug] = inner.definition
            versions.append((slug, inner.pk, inner.version))
            todo.append(inner.definition)
    return Plan(workflow.pk, workflow.slug, definitions, tuple(versions),
                workflow.double_texting, workflow.default_model,
                saved.number if saved is not None else workflow.live_version,
                saved=saved is not None)


def plan_at(workflow: Workflow, number: int) -> Plan | None:
    """``workflow``'s plan at its saved version ``number`` (None: no such version)."""
    saved = WorkflowVersion.objects.filter(workflow=workflow, number=number).first()
    return plan_of(workflow, saved) if saved is not None else None


def resolve(slug: str | None = None, conversation_id: str | None = None) -> Plan | None:
    """The plan of a run: the workflow named, else the conversation's, else the default
    workflow; None when there is none (the built-in conversation graph runs)."""
    if slug:
        workflow = Workflow.objects.filter(slug=slug, enabled=True).first()
        if workflow is None:
            raise WorkflowError("workflow_not_found", _(
                "No enabled workflow “%(slug)s”.") % {"slug": slug}, 404)
        return plan_of(workflow)
    workflow = None
    if conversation_id:
        try:
            workflow = (Workflow.objects.filter(conversations__pk=conversation_id,
                                                enabled=True).first())
        except (ValueError, TypeError, ValidationError):
            workflow = None  # not a UUID: the turn reports the conversation missing
    workflow = workflow or Workflow.objects.filter(is_default=True, enabled=True).first()
    return plan_of(workflow) if workflow else None


# --- the per-process copy of plans and pins ------------------------------------------

VERSION_KEY = "chat:workflows:version"
PINS_KEPT = 10_000  # conversations whose pinned workflow a process remembers


class _Missing(enum.Enum):
    """Not read yet (an enum, unlike a bare ``object()``, is a sentinel mypy narrows)."""

    MISSING = enum.auto()


_MISSING: Final = _Missing.MISSING


class _Plans:
    """Plans by slug (None: no enabled workflow of that slug), by id and the default
    one, and conversations' pins, as read under one version of the token."""

    def __init__(self, version: str | None = None):
        self.plans: dict[tuple, Plan | None] = {}
        self.pins: OrderedDict[str, int | None] = OrderedDict()


# Cheap to build (its dicts fill as runs ask), so a rebuild needs no database thread.
PLANS: VersionedSnapshot[_Plans] = VersionedSnapshot(VERSION_KEY, _Plans,
                                                     thread_sensitive=False)
workflows_changed = PLANS.changed  # post_save/post_delete receiver of Workflow
clear_local_copy = PLANS.clear  # tests; the next run reads plans and pins again


def _load(key: tuple) -> Plan | None:
    """The plan ``key`` names: ``("slug", s)``, ``("id", pk)``, ``("default",)`` or
    ``("version", s, N)`` (the workflow ``s`` at its saved version N)."""
    found = Workflow.objects.filter(enabled=True)
    if key[0] == "version":
        workflow = found.filter(slug=key[1]).first()
        return plan_at(workflow, key[2]) if workflow else None
    if key[0] == "slug":
        found = found.filter(slug=key[1])
    elif key[0] == "id":
        found = found.filter(pk=key[1])
    else:
        found = found.filter(is_default=True)
    workflow = found.first()
    return plan_of(workflow) if workflow else None


def _pin_of(conversation_id: str) -> int | None | Literal[_Missing.MISSING]:
    """The workflow a conversation is pinned to (None: none), ``_MISSING`` if there is
    no such conversation."""
    try:
        found = Conversation.objects.filter(pk=conversation_id).values_list(
            "workflow_id", flat=True)
        return next(iter(found), _MISSING)
    except (ValueError, TypeError, ValidationError):  # not a UUID
        return _MISSING


async def _plan(copy: _Plans, key: tuple) -> Plan | None:
    plan = copy.plans.get(key, _MISSING)
    if plan is _MISSING:
        plan = copy.plans[key] = await sync_to_async(_load)(key)
    return plan


async def aresolve(slug: str | None = None, conversation_id: str | None = None
                   ) -> Plan | None:
    """``resolve`` from this process's copy: no query unless a workflow or a pin changed
    (in any process) since it was read."""
    copy = await PLANS.aget()
    if slug:
        plan = await _plan(copy, ("slug", slug))
        if plan is None:
            raise WorkflowError("workflow_not_found", _(
                "No enabled workflow “%(slug)s”.") % {"slug": slug}, 404)
        return plan
    if conversation_id:
        pin = copy.pins.get(conversation_id, _MISSING)
        if pin is _MISSING:
            pin = await sync_to_async(_pin_of)(conversation_id)
            if pin is not _MISSING:
                copy.pins[conversation_id] = pin
                while len(copy.pins) > PINS_KEPT:
                    copy.pins.popitem(last=False)
        else:
            copy.pins.move_to_end(conversation_id)
        if isinstance(pin, int):
            plan = await _plan(copy, ("id", pin))
            if plan is not None:
                return plan  # else disabled: the default runs
    return await _plan(copy, ("default",))


async def aresolve_version(slug: str, number: int) -> Plan:
    """The workflow ``slug``'s plan at its saved version ``number``, draft or published,
    from this process's copy (the live plan itself when ``number`` is live):
    ``WorkflowError`` ``workflow_not_found`` / ``version_not_found`` (404)."""
    copy = await PLANS.aget()
    live = await _plan(copy, ("slug", slug))
    if live is None:
        raise WorkflowError("workflow_not_found", _(
            "No enabled workflow “%(slug)s”.") % {"slug": slug}, 404)
    if live.live_version == number:
        return live
    key = ("version", slug, number)
    plan = copy.plans.get(key)
    if plan is None:  # not kept when missing: a draft saved next is not announced
        plan = await sync_to_async(_load)(key)
        if plan is not None:
            copy.plans[key] = plan
    if plan is None:
        raise WorkflowError("version_not_found", _(
            "Workflow “%(slug)s” has no version %(number)d.")
            % {"slug": slug, "number": number}, 404)
    return plan


async def aresolve_recorded(plan: Plan | None, number: Any) -> Plan | None:
    """The plan a run recorded as version ``number`` (a waiting run's, a checkpoint's)
    resumes on: ``plan`` (the live one) when it is that version or none is recorded;
    else the workflow at that saved version — or, for a version never saved (history
    from before versions were kept), the live plan, as before."""
    if plan is None or not isinstance(number, int) or isinstance(number, bool) \
            or number == plan.live_version:
        return plan
    try:
        return await aresolve_version(plan.slug, number)
    except WorkflowError:
        return plan


def pinned_to(conversation_id: str) -> int | None | object:
    """The workflow this process last read as ``conversation_id``'s pin (None: none;
    an object that is neither when it has not read it)."""
    held = PLANS.peek()
    return held.value.pins.get(conversation_id, _MISSING) if held else _MISSING


def remember_pin(conversation_id: str, workflow_id: int) -> None:
    """Note in this process's copy that the conversation is pinned to ``workflow_id``
    (just written, or found so): the next turn naming the workflow writes nothing. A
    copy replaced meanwhile (a pin changed somewhere) is rebuilt without it."""
    held = PLANS.peek()
    if held is not None:
        held.value.pins[conversation_id] = workflow_id
        while len(held.value.pins) > PINS_KEPT:
            held.value.pins.popitem(last=False)


def pin_changed(sender: type, instance: Conversation, created: bool = False,
                update_fields: frozenset | None = None, **kwargs) -> None:
    """A conversation saved with (possibly) another workflow: every process re-reads
    pins (a new conversation is in no process's copy yet)."""
    if not created and (update_fields is None or "workflow" in update_fields):
        workflows_changed()


def conversation_workflow(conversation_id: str) -> str | None:
    return (Conversation.objects.filter(pk=conversation_id)
            .values_list("workflow__slug", flat=True).first())


# --- building --------------------------------------------------------------------------


class BuildContext:
    """What node factories may ask the compiler for (sub-workflows' graphs)."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def subgraph(self, slug: str) -> Graph:
        # No checkpointer of its own: it checkpoints into its parent's thread.
        return build(self.plan.definitions[slug], self).compile(name=slug)


def build(definition: dict[str, Any], ctx: BuildContext) -> Builder:
    """The ``StateGraph`` of a (validated) definition."""
    # A run's input, like a subgraph's, is the whole state (``turn_start``).
    builder: Builder = StateGraph(State, context_schema=Context, input_schema=State)
    specs = {node["id"]: node for node in definition["nodes"]}
    entry = definition.get("entry") or definition["nodes"][0]["id"]
    builder.add_edge(START, entry)
    following = {edge["source"]: edge["target"] for edge in definition.get("edges", [])}
    for node_id, spec in specs.items():
        node_type = get_node_type(spec["type"])
        assert node_type is not None  # validated on save: a registered type
        made = node_type.build(node_id, spec.get("config", {}), ctx)
        targets = [*dict.fromkeys(branches(spec))]
        if isinstance(made, NodeGroup):  # several graph nodes (an agent): it adds them
            made.add_to(builder, node_id, following.get(node_id))
            continue
        if isinstance(made, CompiledStateGraph):  # a sub-workflow: edges decide after it
            builder.add_node(node_id, made)
            if targets:
                builder.add_conditional_edges(node_id, _chosen(node_id), [*targets, END])
            elif node_id in following:
                builder.add_conditional_edges(node_id, _next(following[node_id]),
                                              [following[node_id], END])
            else:
                builder.add_edge(node_id, END)
            continue
        made = nodes.announced(node_id, spec["type"], made)
        if targets:
            builder.add_node(node_id, conversation.routed(made, branch_of=node_id),
                             destinations=(*targets, END))
        elif node_id in following:
            builder.add_node(node_id, conversation.routed(made, following[node_id]),
                             destinations=(following[node_id], END))
        else:
            builder.add_node(node_id, made)
            builder.add_edge(node_id, END)
    return builder


def _next(target: str):
    def after(state: State) -> str:
        return END if state.error else target

    after.__name__ = f"to_{target}"
    return after


def _chosen(router_id: str):
    def after(state: State) -> str:
        return END if state.error else state.outputs[router_id]["to"]

    after.__name__ = f"branch_of_{router_id}"
    return after


def compile_plan(plan: Plan, checkpointer: BaseCheckpointSaver | None = None) -> Graph:
    return build(plan.definitions[plan.slug], BuildContext(plan)).compile(
        checkpointer=checkpointer, name=plan.slug)


_compiled: weakref.WeakKeyDictionary[BaseCheckpointSaver, OrderedDict[tuple, Graph]] = (
    weakref.WeakKeyDictionary())


def compiled(plan: Plan, checkpointer: BaseCheckpointSaver) -> Graph:
    """The plan's graph with ``checkpointer``: compiled once per set of versions."""
    graphs = _compiled.setdefault(checkpointer, OrderedDict())
    graph = graphs.get(plan.key)
    if graph is None:
        graph = graphs[plan.key] = compile_plan(plan, checkpointer)
        while len(graphs) > CACHE_SIZE:
            graphs.popitem(last=False)
    else:
        graphs.move_to_end(plan.key)
    return graph
