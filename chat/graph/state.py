"""The state of one conversation thread, as LangGraph checkpoints it.

Content travels only inside lists and dicts: the PostgreSQL checkpointer keeps plain
strings and numbers inline in its JSONB column, but serialises containers through the
(encrypting) serializer, so no message text reaches the checkpoint tables in clear.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages


@dataclass(kw_only=True)
class InputState:
    """What a turn starts from."""

    conversation_id: str
    """The conversation, also the LangGraph thread id."""
    user: str
    """Whose conversation it is (memory is recalled from this user's only)."""
    model: str
    """The model asked for; routing rules may pick another."""
    message: dict[str, Any]
    """The user's new message, already stored: ``{id, turn, role, content, timestamp}``."""
    api_key: str = ""
    """The API key's public prefix (routing facts), never the secret."""
    params: dict[str, Any] = field(default_factory=dict)
    """Sampling parameters (``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``,
    other OpenAI body fields)."""
    tools: list[str] = field(default_factory=list)
    """The tools the user enabled for this conversation (names): an ``agent`` node with
    no tools of its own offers these. Not reset by a turn: a turn that does not name
    them keeps the thread's."""


@dataclass(kw_only=True)
class State(InputState):
    """Everything the nodes pass along; the checkpoint keeps the last turn's."""

    turns: Annotated[int, operator.add] = 0
    """Turns this thread has run, over every process that ran one (+1 per turn)."""
    window: list[dict[str, Any]] = field(default_factory=list)
    """The short-term window: the last N turns' messages, the new one last."""
    memories: list[dict[str, Any]] = field(default_factory=list)
    """Long-term memories recalled for this turn: ``{id, text, score, …}``."""
    prompt: list[dict[str, Any]] = field(default_factory=list)
    """The messages sent to the model, after the plugins' pre-processing."""
    flags: list[str] = field(default_factory=list)
    """Routing facts the plugins raised (e.g. ``sensitive_data``)."""
    plugin_actions: list[dict[str, Any]] = field(default_factory=list)
    """What the plugins did this turn: ``{plugin, action, detail, phase}``."""
    route: dict[str, Any] = field(default_factory=dict)
    """The routing decision: ``{rule, target, fallbacks}``."""
    reply: dict[str, Any] = field(default_factory=dict)
    """The answer: ``{content, model, models, models_tried, usage, latency_ms,
    finish_reason}``, and ``message_id`` once stored."""
    error: dict[str, Any] = field(default_factory=dict)
    """Why the turn stopped early: ``{code, message}`` (empty when it did not)."""
    outputs: dict[str, Any] = field(default_factory=dict)
    """What workflow nodes produced this turn, by name: a router's branch, an HTTP
    tool's answer, a model call kept apart from the reply."""
    agent: dict[str, Any] = field(default_factory=dict)
    """The running agent's bookkeeping (``chat.graph.agent``): its node, the tools it
    offers, its steps, tokens, what it said, calls whose arguments were not JSON."""
    agent_messages: Annotated[list[AnyMessage], add_messages] = field(default_factory=list)
    """The running agent's exchange with its tools since the prompt (its model's calls,
    the tools' answers); an agent that starts clears it."""


def turn_start(message: dict[str, Any]) -> dict[str, Any]:
    """What a turn's input resets, besides the new turn's own fields: the checkpoint
    holds the previous turn's values. Part of the input, so no graph step is spent on
    it; the window starts as the new message alone (a recall node widens it)."""
    return {"turns": 1, "window": [message], "memories": [], "prompt": [], "flags": [],
            "plugin_actions": [], "route": {}, "reply": {}, "error": {}, "outputs": {},
            "agent": {}}
