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

from django.utils.translation import gettext as _

from ..graph.agent import DEFAULT_MAX_STEPS, MAX_STEPS, Agent, AgentConfig
from ..graph.state import State
from .nodes import render
from .registry import register_node


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(name, str) and name for name in value)


def _check_agent(config: dict[str, Any]) -> list[str]:
    problems = [_("“%(key)s” must be a non-empty string.") % {"key": key}
                for key in ("model", "prompt", "output")
                if key in config and (not isinstance(config[key], str) or not config[key])]
    if config.get("output") in ("reply", "message"):
        problems.append(_("“output” must not be “reply” or “message”; leave it out to "
                          "make the answer the reply."))
    for key in ("tools", "approval"):
        if key in config and not _names(config[key]):
            problems.append(_("“%(key)s” must be a list of tool names.") % {"key": key})
    steps = config.get("max_steps", DEFAULT_MAX_STEPS)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        problems.append(_("“max_steps” must be a whole number from 1 to %(max)d.")
                        % {"max": MAX_STEPS})
    if not isinstance(config.get("parallel_tool_calls", True), bool):
        problems.append(_("“parallel_tool_calls” must be true or false."))
    return problems


@register_node("agent", check=_check_agent)
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
