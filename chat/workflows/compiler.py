"""Compile workflows to LangGraph ``StateGraph``s on the conversation graph's state.

A run first loads its ``Plan`` (one query or two: the workflow, and those it includes
as sub-workflows, at their current versions); the compiled graph is cached per
checkpointer under the plan's versions, so an edit in the admin (``version`` + 1) is
compiled on the next run in every process, without a restart.

Every workflow starts with a ``begin`` node (the turn's bookkeeping), then its entry.
After each node the run ends if the state holds an error; otherwise it follows the
node's edge, its router's choice, or ends (no edge, ``end``).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext as _
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from ..graph.context import Context
from ..graph.state import InputState, State
from ..models import Conversation, DoubleTexting, Workflow
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

    @property
    def key(self) -> tuple[tuple[str, int, int], ...]:
        return self.versions


def plan_of(workflow: Workflow) -> Plan:
    """``workflow`` and, recursively, the workflows its sub-workflow nodes run."""
    definitions = {workflow.slug: workflow.definition}
    versions = [(workflow.slug, workflow.pk, workflow.version)]
    todo = [workflow.definition]
    while todo:
        for node in todo.pop().get("nodes", []):
            slug = (node.get("config") or {}).get("workflow")
            if node.get("type") != "sub_workflow" or slug in definitions:
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
                workflow.double_texting, workflow.default_model)


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
        except (ValueError, TypeError):
            workflow = None  # not a UUID: the turn reports the conversation missing
    workflow = workflow or Workflow.objects.filter(is_default=True, enabled=True).first()
    return plan_of(workflow) if workflow else None


def conversation_workflow(conversation_id: str) -> str | None:
    return (Conversation.objects.filter(pk=conversation_id)
            .values_list("workflow__slug", flat=True).first())


# --- building --------------------------------------------------------------------------


class BuildContext:
    """What node factories may ask the compiler for (sub-workflows' graphs)."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def subgraph(self, slug: str) -> CompiledStateGraph:
        # No checkpointer of its own: it checkpoints into its parent's thread.
        return build(self.plan.definitions[slug], self, begin=False).compile(name=slug)


def build(definition: dict[str, Any], ctx: BuildContext, *, begin: bool = True) -> StateGraph:
    """The ``StateGraph`` of a (validated) definition."""
    # A subgraph takes its parent's whole state (a run's input is only the new turn).
    builder = StateGraph(State, context_schema=Context,
                         input_schema=InputState if begin else State)
    specs = {node["id"]: node for node in definition["nodes"]}
    entry = definition.get("entry") or definition["nodes"][0]["id"]
    if begin:
        builder.add_node("begin", nodes.begin_turn)
        builder.add_edge(START, "begin")
        builder.add_edge("begin", entry)
    else:
        builder.add_edge(START, entry)
    following = {edge["source"]: edge["target"] for edge in definition.get("edges", [])}
    for node_id, spec in specs.items():
        node_type = get_node_type(spec["type"])
        made = node_type.build(node_id, spec.get("config", {}), ctx)
        if not isinstance(made, CompiledStateGraph):
            made = nodes.announced(node_id, spec["type"], made)
        builder.add_node(node_id, made)
    for node_id, spec in specs.items():
        targets = branches(spec)
        if targets:
            builder.add_conditional_edges(node_id, _chosen(node_id), [*dict.fromkeys(targets),
                                                                      END])
        elif node_id in following:
            builder.add_conditional_edges(node_id, _next(following[node_id]),
                                          [following[node_id], END])
        else:
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


def compile_plan(plan: Plan, checkpointer: BaseCheckpointSaver | None = None
                 ) -> CompiledStateGraph:
    return build(plan.definitions[plan.slug], BuildContext(plan)).compile(
        checkpointer=checkpointer, name=plan.slug)


_compiled: weakref.WeakKeyDictionary[BaseCheckpointSaver, OrderedDict] = (
    weakref.WeakKeyDictionary())


def compiled(plan: Plan, checkpointer: BaseCheckpointSaver) -> CompiledStateGraph:
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


def workflow_mermaid(workflow: Workflow) -> str:
    """LangGraph's own Mermaid drawing of ``workflow`` (sub-workflows drawn inside)."""
    return compile_plan(plan_of(workflow)).get_graph(xray=1).draw_mermaid()
