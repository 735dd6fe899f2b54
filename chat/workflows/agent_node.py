"""The ``agent`` node type: a model that calls tools until it can answer
(``chat.graph.agent``: three graph nodes of the run, ``<id>``, ``<id>__review`` and
``<id>__tools``).

Config (all optional): ``model`` (default: the run's, routed by the rules), ``prompt``
(a system prompt template, like the ``llm`` node's), ``tools`` (tool names; left out:
the tools the user enabled for the conversation), ``max_steps`` (model calls, 1–50,
default 8), ``parallel_tool_calls`` (default true), ``approval`` (tool names whose calls
a person approves here, besides the tools that always need it), ``output`` (keep the
answer under this name instead of making it the reply; not streamed).
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _

from ..graph.agent import DEFAULT_MAX_STEPS, MAX_STEPS, Agent, AgentConfig
from ..graph.state import State
from .nodes import check_output, render
from .registry import config_schema, register_node
from .schemas import MODEL, OUTPUT, PROMPT, prop, tool_names

AGENT = config_schema({
    "model": MODEL,
    "prompt": PROMPT,
    "tools": tool_names(_("Tools"), _(
        "The tools the agent may call; left out, the tools the user enabled for the "
        "conversation (an empty list: none).")),
    "max_steps": prop("integer", _("Most model calls"), _(
        "The agent answers without tools once it has called the model this many times."),
        minimum=1, maximum=MAX_STEPS, default=DEFAULT_MAX_STEPS),
    "parallel_tool_calls": prop("boolean", _("Parallel tool calls"), _(
        "Let the model ask for several tool calls at once (they run concurrently)."),
        default=True),
    "approval": tool_names(_("Tools to approve"), _(
        "Tools whose calls a person approves here before they run, besides the tools "
        "that always need approval.")),
    "output": OUTPUT,
})


@register_node("agent", check=check_output, schema=AGENT, label=_("Agent"), description=_(
    "A model that may call tools, sees their results and goes on until it answers; a "
    "person may approve chosen tool calls first."))
def agent(node_id: str, config: dict[str, Any], ctx: Any) -> Agent:
    """A model that calls tools (concurrently), sees their results and goes on until it
    answers."""
    template: str = config.get("prompt", "")

    def system(state: State) -> str:
        return render(template, state)

    tools = config.get("tools")
    return Agent(AgentConfig(
        node_id=node_id, model=config.get("model", ""),
        system=system if template else None,
        tools=tuple(tools) if tools is not None else None,
        max_steps=config.get("max_steps", DEFAULT_MAX_STEPS),
        parallel_tool_calls=config.get("parallel_tool_calls", True),
        approval=tuple(config.get("approval", ())), output=config.get("output", "")))
