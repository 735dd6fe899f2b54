"""Run-time settings of the conversation graph (LangGraph's ``context``), read from
Django settings when a turn starts, so an edited setting applies on the next turn."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


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
