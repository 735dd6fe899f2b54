"""The nodes of the conversation graph: async functions that take the state and the
run-time context, call services and return partial updates. Each announces its start
on the custom stream (its end is the ``updates`` stream's); what it decides (route,
plugin actions, memory hits, usage) it also writes there, as studio events."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from langgraph.graph import END
from langgraph.runtime import Runtime
from langgraph.types import Command

from inference.engines.base import ChatRequest, Usage
from inference.errors import EngineError
from plugins.base import PluginBlocked, PluginRequest, PluginResponse
from plugins.chain import aget_chain
from routing import gateway
from routing.gateway import GatewayError, GatewayMeta
from routing.rules import RequestFacts, RouteDecision, aresolve_route, estimate_tokens

from .. import conversations, memory
from .context import Context, with_sink
from .state import State

REQUEST_FIELDS = {"max_tokens", "temperature", "top_p", "stop", "seed"}


class Node(Protocol):
    """A node: the state and the run's context in, a partial update out. (A protocol,
    not a ``Callable``: LangGraph passes ``runtime`` by name.)"""

    __name__: str

    def __call__(self, state: State, runtime: Runtime[Context]) -> Awaitable[dict[str, Any]]:
        ...


class RoutedNode(Protocol):
    """A node that also names where the run goes next (``routed``)."""

    __name__: str

    def __call__(self, state: State, runtime: Runtime[Context]) -> Awaitable[Command]: ...


def announced(node: Node) -> Node:
    """Write ``{"type": "node", "node", "phase": "start"}`` before the node runs."""

    @functools.wraps(node)
    async def run(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        runtime = with_sink(runtime)
        runtime.stream_writer({"type": "node", "node": node.__name__, "phase": "start"})
        return await node(state, runtime)

    return run


def routed(node: Node, target: str | None = None, *,
           branch_of: str | None = None) -> RoutedNode:
    """``node`` choosing where the run goes next itself (LangGraph's ``Command``): to
    the end when its update reports an ``error``, else to ``target`` — or, for the
    branching node ``branch_of``, to the node its update names
    (``outputs[branch_of]["to"]``). A conditional edge would do the same at the cost
    of a read of the whole state and a runnable call per step (0.4 ms here)."""

    @functools.wraps(node)
    async def run(state: State, runtime: Runtime[Context]) -> Command:
        update = await node(state, runtime)
        goto: str | None
        if update.get("error"):
            goto = END
        elif branch_of is not None:
            goto = update["outputs"][branch_of]["to"]
        else:
            goto = target
        return Command(update=update, goto=goto)

    return run


# --- recall ----------------------------------------------------------------------------


@announced
async def recall(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """The short-term window (cache, else database) and the long-term memories most
    like the new message, leaving out those already in the window."""
    window = await conversations.awindow(state.conversation_id, state.message)
    hits: list[dict[str, Any]] = []
    if runtime.context.recall:
        query = conversations.text_of(state.message["content"])
        found = await memory.arecall(state.user, query, [m["id"] for m in window])
        hits = [hit.as_dict() for hit in found]
    runtime.stream_writer({"type": "memory", "hits": hits})
    return {"window": window, "memories": hits}


# --- plugins ---------------------------------------------------------------------------


def plugin_request(state: State, context: Context,
                   messages: list[dict[str, Any]] | None = None) -> PluginRequest:
    """The turn as the plugins see it: a studio conversation (no API key) or an API
    call, inside the run's workflow if it has one."""
    studio = not state.api_key
    return PluginRequest(messages=messages if messages is not None else state.prompt,
                         model=state.model, user=state.user, api_key=state.api_key,
                         conversation_id=state.conversation_id, flags=set(state.flags),
                         surface="studio" if studio else "api",
                         workflow=context.workflow, user_name=state.user if studio else "")


def plugin_actions(metadata: dict, phase: str, runtime: Runtime[Context]) -> list[dict[str, Any]]:
    actions = [{**action, "phase": phase} for action in metadata.get("plugin_actions", [])]
    for action in actions:
        runtime.stream_writer({"type": "plugin", **action})
    return actions


def _blocked(exc: PluginBlocked) -> dict[str, Any]:
    return {"code": "blocked", "message": exc.message, "plugin": exc.plugin, "status": 400}


def with_memories(window: list[dict[str, Any]], memories: list[dict[str, Any]],
                  header: str) -> list[dict[str, Any]]:
    """The window as chat messages, after a system message listing the memories."""
    messages = [{"role": m["role"], "content": m["content"]} for m in window]
    if not memories:
        return messages
    listing = "\n".join(f"- {hit['text']}" for hit in memories)
    return [{"role": "system", "content": f"{header}\n{listing}"}, *messages]


@announced
async def pre_process(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """The prompt (memories, window, new message) through the plugins' pre hooks; a
    refusal stops the turn and keeps the message out of later turns' context."""
    prompt = with_memories(state.window, state.memories, runtime.context.memory_header)
    request = plugin_request(state, runtime.context, prompt)
    chain = await aget_chain()
    try:
        request = chain.pre_process(request)
    except PluginBlocked as exc:
        plugin_actions(request.metadata, "pre", runtime)
        await sync_to_async(conversations.refuse_message)(state.message["id"])
        return {"error": _blocked(exc)}
    return {"prompt": request.messages, "flags": sorted(request.flags),
            "plugin_actions": plugin_actions(request.metadata, "pre", runtime)}


# --- route and generate ----------------------------------------------------------------


def routing_facts(state: State) -> RequestFacts:
    return RequestFacts(model=state.model, messages=state.prompt, api_key=state.api_key,
                        user=state.user, flags=frozenset(state.flags))


def decided(decision: RouteDecision) -> dict[str, Any]:
    """A routing decision as the state keeps it (``route``)."""
    return {"rule": decision.rule.name if decision.rule else None,
            "target": decision.target_model, "fallbacks": list(decision.fallbacks)}


def announce_route(decision: RouteDecision, runtime: Runtime[Context]) -> dict[str, Any]:
    """Write the ``route`` event of ``decision``; its state form."""
    route = decided(decision)
    label = decision.rule.label if decision.rule else None  # the rule's name in the language
    runtime.stream_writer({"type": "route", **route, "rule": label,
                           "explanation": decision.explanation})
    return route


@announced
async def route(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """The routing rules' decision for this prompt, as a step of its own (workflows'
    ``route`` node): the gateway follows it, and its fallbacks, when it generates. A
    model call with no route step before it announces the decision itself."""
    return {"route": announce_route(await aresolve_route(routing_facts(state)), runtime)}


def chat_request(params: dict[str, Any]) -> ChatRequest:
    """Sampling parameters as a ``ChatRequest`` (messages are set by the model call)."""
    named = {key: params[key] for key in REQUEST_FIELDS if params.get(key) is not None}
    if isinstance(named.get("stop"), str):
        named["stop"] = [named["stop"]]
    extra = {k: v for k, v in params.items() if k not in REQUEST_FIELDS and v is not None}
    return ChatRequest(messages=[], extra=extra, **named)


@announced
async def generate(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Stream the answer through the gateway (its tokens, filtered by the plugins'
    stream hooks, are ``token`` events as they arrive)."""
    return await call_model(state, runtime)


REPLY_TAG = "openclaw:reply"  # model calls whose tokens are the answer the caller sees


async def call_model(state: State, runtime: Runtime[Context], *,
                     tags: tuple[str, ...] = (REPLY_TAG,)) -> dict[str, Any]:
    """One gateway call on ``state.prompt`` for ``state.model``: ``{"reply", …}`` or
    ``{"error"}``. Workflow nodes call it with their own prompt, model and tags; a call
    tagged ``REPLY_TAG`` streams its tokens (after the plugins' stream hooks) as
    ``{"type": "token"}`` events on the custom stream, the moment each arrives."""
    chain = await aget_chain()
    stream_filter = chain.stream_filter(plugin_request(state, runtime.context))
    request = replace(chat_request(state.params), messages=state.prompt)
    meta, streams = GatewayMeta(), REPLY_TAG in tags
    # The answer's route is shown when no route step showed it: the gateway's decision,
    # announced as the call starts to answer (or fails).
    routed_here: dict[str, Any] = {}
    parts: list[str] = []
    usage, finish_reason = None, None
    started = time.perf_counter()
    try:
        async for delta in gateway.stream(routing_facts(state), request, meta,
                                          runtime.context.deadline_s):
            if streams and not state.route and not routed_here:
                assert meta.decision is not None  # the gateway decides before its first delta
                routed_here = announce_route(meta.decision, runtime)
            finish_reason = delta.finish_reason or finish_reason
            usage = delta.usage or usage
            text = stream_filter.feed(delta.text) if stream_filter else delta.text
            if text:
                parts.append(text)
                if streams:
                    runtime.stream_writer({"type": "token", "text": text})
        tail = stream_filter.flush() if stream_filter else ""
    except (GatewayError, EngineError, PluginBlocked) as exc:
        if streams and not state.route and not routed_here and meta.decision is not None:
            routed_here = announce_route(meta.decision, runtime)
        return {"error": call_error(exc), **({"route": routed_here} if routed_here else {})}
    if tail:
        parts.append(tail)
        if streams:
            runtime.stream_writer({"type": "token", "text": tail})
    actions = plugin_actions(stream_filter.metadata, "stream", runtime)
    content = "".join(parts)
    counted = usage_of(usage, state.prompt, content)
    runtime.stream_writer({"type": "usage", "model": meta.model, **counted})
    reply = {"content": content, "model": meta.model, "models": meta.models,
             "models_tried": meta.models_tried, "instance": meta.instance_id,
             "rule": meta.rule, "usage": counted, "finish_reason": finish_reason,
             "latency_ms": round((time.perf_counter() - started) * 1000, 1),
             "overhead_ms": round(meta.overhead_ms(), 2)}
    return {"reply": reply, "plugin_actions": [*state.plugin_actions, *actions],
            **({"route": routed_here} if routed_here else {})}


def call_error(exc: GatewayError | EngineError | PluginBlocked) -> dict[str, Any]:
    if isinstance(exc, GatewayError):
        return {"code": exc.code, "message": exc.message, "status": exc.status}
    if isinstance(exc, EngineError):
        return {"code": exc.code, "message": exc.message, "status": exc.http_status}
    return _blocked(exc)


def usage_of(reported: Usage | None, prompt: list[dict[str, Any]],
           content: str) -> dict[str, int]:
    """The engine's token counts, or an estimate when it reports none."""
    if reported:
        prompt_tokens, completion_tokens = reported.prompt_tokens, reported.completion_tokens
    else:
        prompt_tokens = estimate_tokens(prompt)
        completion_tokens = estimate_tokens([{"content": content}]) - 4
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


# --- post_process and remember ---------------------------------------------------------


@announced
async def post_process(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """The whole answer through the plugins' post hooks (reverse order)."""
    chain = await aget_chain()
    response = PluginResponse(content=state.reply["content"], model=state.reply["model"],
                              request=plugin_request(state, runtime.context))
    try:
        response = chain.post_process(response)
    except PluginBlocked as exc:
        plugin_actions(response.metadata, "post", runtime)
        return {"error": _blocked(exc)}
    actions = plugin_actions(response.metadata, "post", runtime)
    return {"reply": {**state.reply, "content": response.content},
            "plugin_actions": [*state.plugin_actions, *actions]}


@announced
async def remember(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Store the answer (encrypted), refresh the cached window and hand what is worth
    keeping to a worker for long-term memory."""
    stored = await sync_to_async(conversations.finish_turn)(
        state.conversation_id, state.message, state.reply, state.window)
    return {"reply": {**state.reply, "message_id": stored["id"],
                      "timestamp": stored["timestamp"]}}
