"""Run-time settings of the conversation graph (LangGraph's ``context``), read from
Django settings when a turn starts, so an edited setting applies on the next turn."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from langgraph.runtime import Runtime


@dataclass(frozen=True, kw_only=True)
class Context:
    """What the nodes may tune per run."""

    recall: bool = True
    """Search long-term memory (off: the window only)."""
    memory_header: str = "Relevant memories from earlier conversations (most similar first):"
    """The line that opens the system message listing recalled memories."""
    deadline_s: float | None = None
    """The request deadline for the gateway (its default when None)."""
    workflow: str = ""
    """The slug of the workflow this run is of ("" for the built-in graph): plugins
    scoped to it run."""

    @classmethod
    def from_settings(cls, **overrides) -> Context:
        return cls(recall=settings.OPENCLAW_MEMORY_TOP_K > 0, **overrides)


# Where a run's nodes write their events when the caller reads them itself
# (``chat.graph.service``): straight to it, not through LangGraph's custom stream, which
# costs a loop callback and a wake-up of the graph's stream per event — per token.
event_sink: contextvars.ContextVar[Callable[[Any], None] | None] = contextvars.ContextVar(
    "event_sink", default=None)


def with_sink(runtime: Runtime[Context]) -> Runtime[Context]:
    """``runtime`` writing its events to the run's ``event_sink``, when it has one."""
    sink = event_sink.get()
    return runtime if sink is None else runtime.override(stream_writer=sink)
