"""The conversation graph's builder: nodes, edges and ``compile``.

``recall → pre_process → generate → post_process → remember``; ``generate`` routes
(the gateway applies the rules, and announces the decision) and streams the answer.
A turn that a plugin refuses, or that no model could answer, ends where it stopped
(an update with an ``error``).
"""

from __future__ import annotations

import abc

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from . import nodes
from .context import Context
from .state import State

# The state is the input and the output too (workflows' graphs are built the same way).
Builder = StateGraph[State, Context, State, State]
Graph = CompiledStateGraph[State, Context, State, State]


class NodeGroup(abc.ABC):
    """A node that is several graph nodes (an agent's loop): it adds them to the builder
    itself, entered at the node's own id and leaving to ``following`` (None: the end;
    an error ends the run wherever it happens)."""

    @abc.abstractmethod
    def add_to(self, builder: Builder, node_id: str, following: str | None) -> None:
        ...


def build() -> Builder:
    # The input is the whole state: a turn resets the previous turn's values with it
    # (``state.turn_start``).
    builder: Builder = StateGraph(State, context_schema=Context, input_schema=State)
    order = [nodes.recall, nodes.pre_process, nodes.generate, nodes.post_process,
             nodes.remember]
    for node, following in zip(order, order[1:], strict=False):
        # Each node goes on to the next, or ends the turn when it reports an error.
        builder.add_node(node.__name__, nodes.routed(node, following.__name__),
                         destinations=(following.__name__, END))
    builder.add_node("remember", nodes.remember)
    builder.add_edge(START, "recall")
    builder.add_edge("remember", END)
    return builder


def compile_graph(checkpointer: BaseCheckpointSaver | None = None) -> Graph:
    """The graph, checkpointed by ``checkpointer`` (None: no persistence, for drawing)."""
    return build().compile(checkpointer=checkpointer, name="conversation")
