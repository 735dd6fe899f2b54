"""The agent loop: a model that may call tools, sees their results and goes on until it
answers — nodes of the run's own graph, so each step is a step of the run: checkpointed
in its thread (with the run's durability), and an approval, time travel and double
texting work inside it like anywhere in a run.

An agent node ``<id>`` is three graph nodes: ``<id>`` (one model call with the tools
offered, through the gateway: rules, balancing, failover; its text streams as ``token``
events), ``<id>__review`` (only when a call needs a person: one ``interrupt`` listing
the calls; approve, edit the arguments, or reject — the model hears of a rejection)
and ``<id>__tools`` (LangGraph's ``ToolNode``: the calls run concurrently, each through
``chat.tools.service.acall`` under its timeout, an error or timeout given back to the
model as the tool's answer), then ``<id>`` again, until the model answers without
calling a tool or ``max_steps`` model calls have been made (the last is then asked to
answer without tools). The tools are resolved when the agent starts — those named in
its config, else the ones the user enabled for the conversation (``state.tools``) —
among the tools the run's principal may use in its workflow; with none, the agent is
one model call, as cheap as an ``llm`` node. Its exchange with the tools lives in
``state.agent_messages`` (cleared when it starts and when it answers), its bookkeeping
in ``state.agent``.

Events (besides ``token``, ``route`` and ``usage``): ``{"type": "tool_call", "node",
"id", "name", "arguments", "step", "approval"}`` as the model asks for a call,
``{"type": "tool_result", "node", "id", "name", "status": "ok" | "error", "content",
"duration_ms"}`` as each ends; a review is the run's ``interrupt`` (``{"node", "kind":
"tool_approval", "prompt", "tool_calls", "message"}``) and its decision an
``approval`` event."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from django.utils.translation import gettext as _
from langchain_core.messages import AIMessage, AnyMessage, RemoveMessage, ToolMessage
from langgraph.graph import END
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt

from inference.errors import EngineError
from plugins.base import PluginBlocked
from plugins.chain import aget_chain
from routing import gateway
from routing.gateway import GatewayError, GatewayMeta

from .. import conversations
from ..tools.registry import ToolContext
from ..tools.service import ToolResult, ToolSpec, acall, aspecs_for
from . import nodes
from .context import Context, event_sink, with_sink
from .graph import Builder, NodeGroup
from .state import State

DEFAULT_MAX_STEPS = 8
MAX_STEPS = 50
EVENT_CONTENT_CHARS = 2000  # of a tool's result, in its event (the model gets it whole)
ACTIONS = ("approve", "edit", "reject")
TOOLS_SUFFIX, REVIEW_SUFFIX = "__tools", "__review"  # an agent's other graph nodes


@dataclass(frozen=True)
class AgentConfig:
    """An agent node's settings (validated by ``chat.workflows.nodes``)."""

    node_id: str
    model: str = ""
    system: Callable[[State], str] | None = None
    """The system prompt of a run (the node's template filled in), if it has one."""
    tools: tuple[str, ...] | None = None
    """The tools offered (None: the ones the user enabled)."""
    max_steps: int = DEFAULT_MAX_STEPS
    parallel_tool_calls: bool = True
    approval: tuple[str, ...] = ()
    """Tools whose calls a person approves here, besides those that always need it."""
    output: str = ""
    """Keep the answer under this name instead of making it the reply (not streamed)."""


def _writer(runtime: Any) -> Any:
    sink = event_sink.get()
    return sink if sink is not None else runtime.stream_writer


# --- the model step ---------------------------------------------------------------------


def _wire(message: AnyMessage) -> dict[str, Any]:
    """One of the loop's messages as OpenAI's chat wire format has it."""
    if isinstance(message, ToolMessage):
        return {"role": "tool", "tool_call_id": message.tool_call_id,
                "content": message.content}
    calls = [{"id": call["id"], "type": "function",
              "function": {"name": call["name"],
                           "arguments": json.dumps(call["args"], ensure_ascii=False)}}
             for call in getattr(message, "tool_calls", [])]
    return {"role": "assistant", "content": message.content or None,
            **({"tool_calls": calls} if calls else {})}


def _assemble(fragments: dict[int, dict[str, Any]]) -> tuple[list[dict], dict[str, str]]:
    """Streamed tool-call fragments as whole calls ``{id, name, args}``, and the ids of
    those whose arguments are not a JSON object (with why)."""
    calls, invalid = [], {}
    for index in sorted(fragments):
        piece = fragments[index]
        call_id = piece.get("id") or f"call_{uuid.uuid4().hex[:24]}"
        raw = piece.get("arguments") or "{}"
        try:
            args = json.loads(raw)
        except ValueError:
            args = None
        if not isinstance(args, dict):
            invalid[call_id] = _("The arguments were not a JSON object: %(raw)s") % {
                "raw": raw[:200]}
            args = {}
        calls.append({"id": call_id, "name": piece.get("name") or "", "args": args,
                      "type": "tool_call"})
    return calls, invalid


def _prompt(state: State, history: list[AnyMessage], config: AgentConfig,
            context: Context) -> list[dict]:
    prompt = state.prompt or nodes.with_memories(state.window, state.memories,
                                                 context.memory_header)
    if config.system is not None:
        prompt = [{"role": "system", "content": config.system(state)}, *prompt]
    return [*prompt, *(_wire(m) for m in history)]


def _sum(usage: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    return {key: usage.get(key, 0) + more.get(key, 0) for key in keys}


def _needs_approval(call: Mapping[str, Any], tools: dict[str, dict],
                    config: AgentConfig) -> bool:
    spec = tools.get(call["name"])
    return spec is not None and (spec["requires_approval"] or call["name"] in config.approval)


def _starts(state: State, node_id: str) -> bool:
    return state.agent.get("node") != node_id or bool(state.agent.get("done"))


def _think(config: AgentConfig, tools_id: str, review_id: str, after: str):
    streams = not config.output
    node_id = config.node_id

    async def think(state: State, runtime: Runtime[Context]) -> Command:
        runtime = with_sink(runtime)
        write = runtime.stream_writer
        held, history = state.agent, state.agent_messages
        cleared: list[Any] = []  # RemoveMessage is no AnyMessage, yet add_messages takes it
        if _starts(state, node_id):
            write({"type": "node", "node": node_id, "kind": "agent", "phase": "start"})
            names = config.tools if config.tools is not None else state.tools
            specs = await aspecs_for(names, user=state.user, api_key=state.api_key,
                                     workflow=runtime.context.workflow) if names else []
            held = {"node": node_id, "tools": [asdict(spec) for spec in specs], "steps": 0,
                    "usage": {}, "text": [], "invalid": {}}
            cleared = [RemoveMessage(id=REMOVE_ALL_MESSAGES)] if history else []
            history = []
        step = held["steps"] + 1
        offered = [ToolSpec(**spec).openai() for spec in held["tools"]]
        last = step >= config.max_steps
        called = replace(state, model=config.model or state.model,
                         prompt=_prompt(state, history, config, runtime.context))
        extra: dict[str, Any] = {}
        if offered:
            extra = {"tools": offered, "tool_choice": "none" if last else "auto",
                     "parallel_tool_calls": config.parallel_tool_calls}
        outcome = await _call(called, runtime, extra, streams, separate=bool(held["text"]))
        if "error" in outcome:
            return Command(update=outcome, goto=END)
        text, calls, reply = outcome["text"], outcome["calls"], outcome["reply"]
        said = [*held["text"], text] if text else held["text"]
        held = {**held, "steps": step, "usage": _sum(held["usage"], reply["usage"]),
                "text": said}
        update: dict[str, Any] = {"route": outcome["route"]} if outcome["route"] else {}
        if calls and offered and not last:
            tools = {spec["name"]: spec for spec in held["tools"]}
            review = False
            for call in calls:
                approval = _needs_approval(call, tools, config)
                review = review or approval
                write({"type": "tool_call", "node": node_id, "id": call["id"],
                       "name": call["name"], "arguments": call["args"], "step": step,
                       "approval": approval})
            held["invalid"] = {**held["invalid"], **outcome["invalid"]}
            message = AIMessage(content=text, tool_calls=calls, id=f"{node_id}-{step}")
            update.update(agent=held, agent_messages=[*cleared, message])
            return Command(update=update, goto=review_id if review else tools_id)
        reply = {**reply, "content": "\n\n".join(said) if streams else text,
                 "usage": held["usage"], "steps": step}
        if config.output:
            update["outputs"] = {**state.outputs, config.output: reply}
        else:
            update["reply"] = reply
        update["plugin_actions"] = [*state.plugin_actions, *outcome["actions"]]
        if step > 1 or cleared:  # the exchange is over: the reply holds its answer
            update.update(agent={**held, "done": True},
                          agent_messages=[RemoveMessage(id=REMOVE_ALL_MESSAGES)])
        return Command(update=update, goto=after)

    return think


async def _call(state: State, runtime: Runtime[Context], extra: dict[str, Any],
                streams: bool, separate: bool) -> dict[str, Any]:
    """One gateway call: its text (streamed as ``token`` events when ``streams``; after
    earlier steps' text, a blank line first), tool calls, reply fields — or ``error``."""
    chain = await aget_chain()
    stream_filter = chain.stream_filter(nodes.plugin_request(state, runtime.context))
    request = nodes.chat_request({**state.params, **extra})
    request = replace(request, messages=state.prompt)
    meta = GatewayMeta()
    routed: dict[str, Any] = {}
    parts: list[str] = []
    fragments: dict[int, dict[str, Any]] = {}
    usage, finish_reason = None, None
    write = runtime.stream_writer
    started = time.perf_counter()

    def say(text: str) -> None:
        if not text:
            return
        if separate and not parts:
            parts.append("\n\n")
            if streams:
                write({"type": "token", "text": "\n\n"})
        parts.append(text)
        if streams:
            write({"type": "token", "text": text})

    try:
        async for delta in gateway.stream(nodes.routing_facts(state), request, meta,
                                          runtime.context.deadline_s):
            if not state.route and not routed:
                assert meta.decision is not None  # decided before the first delta
                routed = nodes.announce_route(meta.decision, runtime)
            finish_reason = delta.finish_reason or finish_reason
            usage = delta.usage or usage
            for piece in delta.tool_calls or ():
                held = fragments.setdefault(piece.get("index", 0), {"arguments": ""})
                function = piece.get("function") or {}
                held["id"] = piece.get("id") or held.get("id")
                held["name"] = held.get("name") or function.get("name")
                held["arguments"] += function.get("arguments") or ""
            say(stream_filter.feed(delta.text) if stream_filter else delta.text)
        say(stream_filter.flush() if stream_filter else "")
    except (GatewayError, EngineError, PluginBlocked) as exc:
        if not state.route and not routed and meta.decision is not None:
            routed = nodes.announce_route(meta.decision, runtime)
        return {"error": nodes.call_error(exc), **({"route": routed} if routed else {})}
    calls, invalid = _assemble(fragments)
    text = "".join(parts).removeprefix("\n\n")
    counted = nodes.usage_of(usage, state.prompt, text)
    write({"type": "usage", "model": meta.model, **counted})
    reply = {"model": meta.model, "models": meta.models, "models_tried": meta.models_tried,
             "instance": meta.instance_id, "rule": meta.rule, "usage": counted,
             "finish_reason": finish_reason,
             "latency_ms": round((time.perf_counter() - started) * 1000, 1),
             "overhead_ms": round(meta.overhead_ms(), 2)}
    actions = nodes.plugin_actions(stream_filter.metadata if stream_filter else {}, "stream",
                                   runtime)
    return {"text": text, "calls": calls, "invalid": invalid, "reply": reply,
            "actions": actions, "route": routed}


# --- review ------------------------------------------------------------------------------


def tool_decision(value: Any, calls: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A resume value as ``{"action", "arguments"?: {call id: args}, "reason"?}``: a bare
    action string is accepted; an edit names each call's new arguments by id (or, with
    one call under review, gives them as ``arguments`` or as JSON ``content``); anything
    else is a rejection, so nothing unapproved runs."""
    if isinstance(value, str):
        value = {"action": value}
    if not isinstance(value, dict) or value.get("action") not in ACTIONS:
        return {"action": "reject", "reason": _("Not a decision: approve, edit or reject.")}
    if value["action"] != "edit":
        return value
    edited = value.get("arguments")
    if edited is None and isinstance(value.get("content"), str):
        try:
            edited = json.loads(value["content"])
        except ValueError:
            return {"action": "reject", "reason": _("The edited arguments are not JSON.")}
    ids = {call["id"] for call in calls}
    if isinstance(edited, dict) and len(calls) == 1 and not set(edited) <= ids:
        edited = {calls[0]["id"]: edited}
    if not isinstance(edited, dict) or not edited or not set(edited) <= ids or \
            not all(isinstance(args, dict) for args in edited.values()):
        return {"action": "reject", "reason": _(
            "An edit gives new arguments (a JSON object) for the calls under review.")}
    return {"action": "edit", "arguments": edited}


def _review(config: AgentConfig, tools_id: str):
    async def review(state: State, runtime: Runtime[Context]) -> Command:
        runtime = with_sink(runtime)
        message = state.agent_messages[-1]
        assert isinstance(message, AIMessage)  # think sends the run here after a call
        tools = {spec["name"]: spec for spec in state.agent["tools"]}
        pending = [call for call in message.tool_calls
                   if _needs_approval(call, tools, config)]
        decision = tool_decision(interrupt({
            "node": config.node_id, "kind": "tool_approval",
            "prompt": _("The agent wants to call a tool: approve, edit or reject."),
            "tool_calls": [{"id": call["id"], "name": call["name"],
                            "arguments": call["args"]} for call in pending],
            "message": conversations.text_of(state.message.get("content", ""))}), pending)
        runtime.stream_writer({"type": "approval", "node": config.node_id, **decision})
        if decision["action"] == "approve":
            return Command(goto=tools_id)
        if decision["action"] == "edit":
            edited = [{**call, "args": decision["arguments"].get(call["id"], call["args"])}
                      for call in message.tool_calls]
            return Command(update={"agent_messages": [AIMessage(
                content=message.content, tool_calls=edited, id=message.id)]}, goto=tools_id)
        reason = decision.get("reason") or _("Rejected by a reviewer.")
        refused = [ToolMessage(_("A reviewer rejected this call: %(reason)s")
                               % {"reason": reason}, tool_call_id=call["id"],
                               name=call["name"], status="error")
                   for call in message.tool_calls]
        return Command(update={"agent_messages": refused}, goto=config.node_id)

    return review


# --- the tool step -----------------------------------------------------------------------


def _run_tool(config: AgentConfig):
    async def run(request: ToolCallRequest, execute: Any) -> ToolMessage:
        call, state = request.tool_call, request.state
        write = _writer(request.runtime)
        tools = {spec["name"]: spec for spec in state.agent["tools"]}
        context = request.runtime.context
        assert isinstance(context, Context)  # the run's: ToolNode passes it on
        spec = tools.get(call["name"])
        if call["id"] in state.agent["invalid"]:
            result = ToolResult(state.agent["invalid"][call["id"]], True)
        elif spec is None:
            result = ToolResult(_("There is no tool “%(name)s” here; the tools are: "
                                  "%(names)s.") % {"name": call["name"],
                                                   "names": ", ".join(tools) or "-"}, True)
        else:
            result = await acall(ToolSpec(**spec), call["args"], ToolContext(
                user=state.user, api_key=state.api_key,
                conversation_id=state.conversation_id, workflow=context.workflow))
        write({"type": "tool_result", "node": config.node_id, "id": call["id"],
               "name": call["name"], "status": "error" if result.is_error else "ok",
               "content": result.content[:EVENT_CONTENT_CHARS],
               "duration_ms": result.duration_ms})
        return ToolMessage(result.content, tool_call_id=call["id"], name=call["name"],
                           status="error" if result.is_error else "success")

    return run


class Agent(NodeGroup):
    """An agent node's three graph nodes (see the module's docstring)."""

    def __init__(self, config: AgentConfig):
        self.config = config

    def add_to(self, builder: Builder, node_id: str, following: str | None) -> None:
        tools_id, review_id = f"{node_id}{TOOLS_SUFFIX}", f"{node_id}{REVIEW_SUFFIX}"
        after = following or END
        builder.add_node(node_id, _think(self.config, tools_id, review_id, after),
                         destinations=tuple(dict.fromkeys((tools_id, review_id, after, END))))
        builder.add_node(review_id, _review(self.config, tools_id),
                         destinations=(tools_id, node_id))
        builder.add_node(tools_id, ToolNode([], messages_key="agent_messages",
                                            awrap_tool_call=_run_tool(self.config)))
        builder.add_edge(tools_id, node_id)
