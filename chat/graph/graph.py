"""The conversation graph's builder: nodes, edges and ``compile``.

``recall → pre_process → route → generate → post_process → remember``; a turn that a
plugin refuses, or that no model could answer, ends where it stopped (``state.error``).
"""

from __future__ import annotations

from typing import Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from . import nodes
from .context import Context
from .state import InputState, State


def after_pre_process(state: State) -> Literal["route", "__end__"]:
    return END if state.error else "route"


def after_generate(state: State) -> Literal["post_process", "__end__"]:
    return END if state.error else "post_process"


def after_post_process(state: State) -> Literal["remember", "__end__"]:
    return END if state.error else "remember"


def build() -> StateGraph:
    builder = StateGraph(State, context_schema=Context, input_schema=InputState)
    for node in (nodes.recall, nodes.pre_process, nodes.route, nodes.generate,
                 nodes.post_process, nodes.remember):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "recall")
    builder.add_edge("recall", "pre_process")
    builder.add_conditional_edges("pre_process", after_pre_process)
    builder.add_edge("route", "generate")
    builder.add_conditional_edges("generate", after_generate)
    builder.add_conditional_edges("post_process", after_post_process)
    builder.add_edge("remember", END)
    return builder


def compile_graph(checkpointer: BaseCheckpointSaver | None = None) -> CompiledStateGraph:
    """The graph, checkpointed by ``checkpointer`` (None: no persistence, for drawing)."""
    return build().compile(checkpointer=checkpointer, name="conversation")
