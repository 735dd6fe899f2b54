"""The nodes of the conversation graph: async functions that take the state and the
run-time context, call services and return partial updates. Each announces its start
on the custom stream (its end is the ``updates`` stream's); what it decides (route,
plugin actions, memory hits, usage) it also writes there, as studio events."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from langgraph.runtime import Runtime

from inference.engines.base import ChatRequest
from inference.errors import EngineError
from plugins.base import PluginBlocked, PluginRequest, PluginResponse
from plugins.chain import aget_chain
from routing.gateway import GatewayError, GatewayMeta
from routing.rules import RequestFacts, estimate_tokens, resolve_route

from .. import conversations, memory
from .context import Context
from .model import GatewayChatModel
from .state import State

Node = Callable[[State, Runtime[Context]], Awaitable[dict[str, Any]]]
REQUEST_FIELDS = {"max_tokens", "temperature", "top_p", "stop", "seed"}


def announced(node: Node) -> Node:
    """Write ``{"type": "node", "node", "phase": "start"}`` before the node runs."""

    @functools.wraps(node)
    async def run(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        runtime.stream_writer({"type": "node", "node": node.__name__, "phase": "start"})
        return await node(state, runtime)

    return run


# --- recall ----------------------------------------------------------------------------


@announced
async def recall(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """The short-term window (cache, else database) and the long-term memories most
    like the new message, leaving out those already in the window."""
    window = await sync_to_async(conversations.window)(state.conversation_id, state.message)
    hits: list[dict[str, Any]] = []
    if runtime.context.recall:
        query = conversations.text_of(state.message["content"])
        found = await memory.arecall(state.user, query, [m["id"] for m in window])
        hits = [hit.as_dict() for hit in found]
    runtime.stream_writer({"type": "memory", "hits": hits})
    # The checkpoint holds the previous turn's values: this turn starts them afresh.
    return {"turns": 1, "window": window, "memories": hits, "prompt": [], "flags": [],
            "plugin_actions": [], "route": {}, "reply": {}, "error": {}}


# --- plugins ---------------------------------------------------------------------------


def plugin_request(state: State, messages: list[dict[str, Any]] | None = None) -> PluginRequest:
    return PluginRequest(messages=messages if messages is not None else state.prompt,
                         model=state.model, user=state.user, api_key=state.api_key,
                         conversation_id=state.conversation_id, flags=set(state.flags))


def _actions(metadata: dict, phase: str, runtime: Runtime[Context]) -> list[dict[str, Any]]:
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
    request = plugin_request(state, prompt)
    chain = await aget_chain()
    try:
        request = chain.pre_process(request)
    except PluginBlocked as exc:
        _actions(request.metadata, "pre", runtime)
        await sync_to_async(conversations.refuse_message)(state.message["id"])
        return {"error": _blocked(exc)}
    return {"prompt": request.messages, "flags": sorted(request.flags),
            "plugin_actions": _actions(request.metadata, "pre", runtime)}


# --- route and generate ----------------------------------------------------------------


def routing_facts(state: State) -> RequestFacts:
    return RequestFacts(model=state.model, messages=state.prompt, api_key=state.api_key,
                        user=state.user, flags=frozenset(state.flags))


@announced
async def route(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """The routing rules' decision for this prompt (the gateway follows it, and its
    fallbacks, when it generates)."""
    decision = await sync_to_async(resolve_route)(routing_facts(state))
    decided = {"rule": decision.rule.name if decision.rule else None,
               "target": decision.target_model, "fallbacks": list(decision.fallbacks)}
    runtime.stream_writer({"type": "route", **decided, "explanation": decision.explanation})
    return {"route": decided}


def chat_request(params: dict[str, Any]) -> ChatRequest:
    """Sampling parameters as a ``ChatRequest`` (messages are set by the model call)."""
    named = {key: params[key] for key in REQUEST_FIELDS if params.get(key) is not None}
    if isinstance(named.get("stop"), str):
        named["stop"] = [named["stop"]]
    extra = {k: v for k, v in params.items() if k not in REQUEST_FIELDS and v is not None}
    return ChatRequest(messages=[], extra=extra, **named)


@announced
async def generate(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Stream the answer through the gateway (tokens reach the ``messages`` stream,
    filtered by the plugins' stream hooks)."""
    return await call_model(state, runtime)


REPLY_TAG = "openclaw:reply"  # model calls whose tokens are the answer the caller sees


async def call_model(state: State, runtime: Runtime[Context], *,
                     tags: tuple[str, ...] = (REPLY_TAG,)) -> dict[str, Any]:
    """One gateway call on ``state.prompt`` for ``state.model``: ``{"reply", …}`` or
    ``{"error"}``. Workflow nodes call it with their own prompt, model and tags."""
    chain = await aget_chain()
    stream_filter = chain.stream_filter(plugin_request(state))
    llm = GatewayChatModel(facts=routing_facts(state), request=chat_request(state.params),
                           meta=GatewayMeta(), stream_filter=stream_filter,
                           deadline_s=runtime.context.deadline_s, tags=list(tags))
    started = time.perf_counter()
    try:
        message = await llm.ainvoke(state.prompt)
    except GatewayError as exc:
        return {"error": {"code": exc.code, "message": exc.message, "status": exc.status}}
    except EngineError as exc:
        return {"error": {"code": exc.code, "message": exc.message,
                          "status": exc.http_status}}
    except PluginBlocked as exc:
        return {"error": _blocked(exc)}
    actions = _actions(stream_filter.metadata, "stream", runtime)
    content = message.content if isinstance(message.content, str) else str(message.content)
    usage = _usage(message.usage_metadata, state.prompt, content)
    meta = llm.meta
    runtime.stream_writer({"type": "usage", "model": meta.model, **usage})
    reply = {"content": content, "model": meta.model, "models": meta.models,
             "models_tried": meta.models_tried, "instance": meta.instance_id,
             "rule": meta.rule, "usage": usage, "finish_reason": llm.finish_reason,
             "latency_ms": round((time.perf_counter() - started) * 1000, 1),
             "overhead_ms": round(meta.overhead_ms(), 2)}
    return {"reply": reply, "plugin_actions": [*state.plugin_actions, *actions]}


def _usage(reported: dict | None, prompt: list[dict[str, Any]], content: str) -> dict[str, int]:
    """The engine's token counts, or an estimate when it reports none."""
    if reported:
        prompt_tokens, completion_tokens = reported["input_tokens"], reported["output_tokens"]
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
                              request=plugin_request(state))
    try:
        response = chain.post_process(response)
    except PluginBlocked as exc:
        _actions(response.metadata, "post", runtime)
        return {"error": _blocked(exc)}
    actions = _actions(response.metadata, "post", runtime)
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
