"""The built-in node types of workflows. Each factory gets the node's id, its
validated config and the compiler's context, and returns what LangGraph runs: an
async function of ``(state, runtime)`` returning a partial update, like the
conversation graph's nodes (which several of these wrap), or a compiled subgraph.

Config keys (all optional unless named; each type's schema, in ``.schemas``, has them
all with their types, defaults and bounds):

* ``memory_recall`` — the short-term window and (``long_term``: true) long-term
  memories.
* ``plugin`` — ``phase``: ``pre`` (the prompt through the pre hooks) or ``post``.
* ``route`` — the routing rules' decision, shown as an event.
* ``llm`` — ``model`` (a fixed model; default: the run's, routed by the rules),
  ``prompt`` (a system prompt template: ``{{ message }}``, ``{{ reply }}``,
  ``{{ user }}``, ``{{ outputs.<name>… }}``), ``output`` (keep the answer under this
  name instead of making it the reply; such calls do not stream).
* ``condition`` — ``when`` (a routing-rule condition), ``then``, ``else`` (node ids),
  ``subject``. ``router`` — ``routes``: ``[{when, to}]`` (the first match wins),
  ``default``, ``subject``. The subject is the text conditions see as ``content``:
  ``message`` (default), ``reply`` or an output's name.
* ``http_tool`` — ``url`` (its host must be in ``OPENCLAW_WORKFLOW_HTTP_HOSTS``),
  ``method`` (``GET`` or ``POST``: a JSON body of message, user, conversation and
  outputs), ``timeout_s`` (≤ 30, default 10), ``output`` (default: the node's id).
* ``human_approval`` — ``prompt`` (what the approver is asked). Resumed with
  ``{"action": "approve"}``, ``{"action": "edit", "content": …}`` or
  ``{"action": "reject", "reason": …}``.
* ``memory_write`` — store the reply (encrypted) and remember what is worth keeping.
* ``sub_workflow`` — ``workflow``: another workflow's slug, run as a subgraph.
* ``annotation_reply`` — ``matched``, ``otherwise`` (node ids): answer from the
  curated question/answer pairs (admin: Q/A pairs) when one matches the message by
  embedding, else go on (usually to an ``llm`` node).
* ``end`` — the run ends here.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import replace
from typing import Any

import aiohttp
from django.conf import settings
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from yarl import URL

from routing.models import condition_problems
from routing.rules import RequestFacts, evaluate

from .. import conversations, curated
from ..graph import nodes as conversation
from ..graph.context import Context, with_sink
from ..graph.state import State
from . import schemas
from .registry import register_node

Node = conversation.Node
HTTP_MAX_TIMEOUT_S = float(schemas.HTTP_TIMEOUT_LIMIT_S)
HTTP_MAX_BYTES = 64 * 1024
TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")
ACTIONS = ("approve", "edit", "reject")


def announced(node_id: str, kind: str, run: Node) -> Node:
    """``run`` writing ``{"type": "node", "node", "kind", "phase": "start"}`` first."""

    @functools.wraps(run)
    async def node(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        runtime = with_sink(runtime)
        runtime.stream_writer({"type": "node", "node": node_id, "kind": kind,
                               "phase": "start"})
        return await run(state, runtime)

    return node


def _inner(node: Node) -> Node:
    """A conversation-graph node without its own start event (the workflow's names it)."""
    return getattr(node, "__wrapped__", node)


# --- templates and subjects ------------------------------------------------------------


def template_values(state: State) -> dict[str, Any]:
    return {"message": conversations.text_of(state.message.get("content", "")),
            "reply": state.reply.get("content", ""), "user": state.user,
            "model": state.model, "outputs": state.outputs}


def render(template: str, state: State) -> str:
    """``{{ name.path }}`` replaced by the value it names (unknown names: empty)."""
    values = template_values(state)

    def value(match: re.Match) -> str:
        current: Any = values
        for part in match.group(1).split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if current is None:
            return ""
        return current if isinstance(current, str) else json.dumps(current, ensure_ascii=False)

    return TEMPLATE.sub(value, template)


def subject_text(state: State, subject: str) -> str:
    if subject == "message":
        return conversations.text_of(state.message.get("content", ""))
    if subject == "reply":
        return state.reply.get("content", "")
    found = state.outputs.get(subject)
    if isinstance(found, dict):
        found = found.get("content", found.get("body", found))
    return found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)


def facts_for(state: State, subject: str) -> RequestFacts:
    """Routing-rule facts of the run, ``content`` being the chosen subject's text."""
    return RequestFacts(model=state.model, api_key=state.api_key, user=state.user,
                        flags=frozenset(state.flags),
                        messages=[{"role": "user", "content": subject_text(state, subject)}])


# --- conversation stages ---------------------------------------------------------------


@register_node("memory_recall", schema=schemas.MEMORY_RECALL,
               label=gettext_lazy("Recall memory"), description=gettext_lazy(
                   "Loads the conversation's recent messages and, unless turned off, the "
                   "long-term memories most like the new message, for the model to see."))
def memory_recall(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """The short-term window and (``long_term``, default true) the long-term memories
    like the new message."""
    long_term = config.get("long_term", True)

    async def run(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        if not long_term:
            runtime = runtime.override(context=replace(runtime.context, recall=False))
        update = await _inner(conversation.recall)(state, runtime)
        return {key: value for key, value in update.items()
                if key in ("window", "memories")}

    return run


@register_node("plugin", schema=schemas.PLUGIN, label=gettext_lazy("Plugins"),
               description=gettext_lazy(
                   "Runs the enabled plugins: their pre hooks on the prompt before the "
                   "model, or their post hooks on the reply after it."))
def plugin(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """The plugin chain: pre hooks on the prompt, or post hooks on the reply."""
    if config.get("phase", "pre") == "post":
        return _inner(conversation.post_process)
    return _inner(conversation.pre_process)


@register_node("route", schema=schemas.NO_SETTINGS, label=gettext_lazy("Routing decision"),
               description=gettext_lazy(
                   "Applies the routing rules to the prompt and shows their decision (the "
                   "model and instance that will answer) as a step of its own."))
def route(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """The routing rules' decision for the prompt, as an event."""
    return _inner(conversation.route)


def check_output(config: dict[str, Any]) -> list[str]:
    """An ``output`` name that is not the reply's or the message's (a model call's)."""
    if config.get("output") in ("reply", "message"):
        return [_("“output” must not be “reply” or “message”; leave it out to make the "
                  "answer the reply.")]
    return []


@register_node("llm", check=check_output, schema=schemas.LLM, label=gettext_lazy("Model call"),
               description=gettext_lazy(
                   "Calls a model (the run's, chosen by the routing rules, or a fixed one) "
                   "with an optional system prompt; its answer becomes the reply or is "
                   "kept as a named output."))
def llm(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """A model call: the run's model (routed) or a fixed one, with a prompt template."""
    output, template, model = config.get("output"), config.get("prompt"), config.get("model")

    async def run(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        prompt = state.prompt or conversation.with_memories(
            state.window, state.memories, runtime.context.memory_header)
        if template:
            prompt = [{"role": "system", "content": render(template, state)}, *prompt]
        called = replace(state, prompt=prompt, model=model or state.model)
        update = await conversation.call_model(
            called, runtime, tags=() if output else (conversation.REPLY_TAG,))
        if output and "reply" in update:
            return {"outputs": {**state.outputs, output: update["reply"]},
                    "plugin_actions": update["plugin_actions"]}
        return update

    return run


@register_node("memory_write", schema=schemas.NO_SETTINGS, label=gettext_lazy("Save to memory"),
               description=gettext_lazy(
                   "Stores the reply in the conversation (encrypted) and remembers what is "
                   "worth keeping for later conversations."))
def memory_write(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """Store the reply (encrypted) and remember what is worth keeping."""
    return _inner(conversation.remember)


# --- routers ---------------------------------------------------------------------------


def _check_when(condition: Any, where: str) -> list[str]:
    return [f"{where}.{path}: {message}" if path != "condition" else f"{where}: {message}"
            for path, message in condition_problems(condition)]


def _check_condition(config: dict[str, Any]) -> list[str]:
    return _check_when(config["when"], "when")


def _check_router(config: dict[str, Any]) -> list[str]:
    return [problem for index, item in enumerate(config["routes"])
            for problem in _check_when(item["when"], f"routes[{index}].when")]


def _router(node_id: str, routes: list[tuple[dict, str]], default: str, subject: str) -> Node:
    async def run(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        facts = facts_for(state, subject)
        target, explanation = default, []
        for condition, to in routes:
            matched, lines = evaluate(condition, facts)
            explanation += lines
            if matched:
                target = to
                break
        runtime.stream_writer({"type": "branch", "node": node_id, "to": target,
                               "explanation": explanation})
        return {"outputs": {**state.outputs, node_id: {"to": target}}}

    return run


@register_node("condition", check=_check_condition, schema=schemas.CONDITION,
               branches=lambda config: [config["then"], config["else"]],
               label=gettext_lazy("Condition"), description=gettext_lazy(
                   "Goes to one node when a condition on the message, the reply or an "
                   "output holds, and to another when it does not."))
def condition(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """Go to ``then`` when the condition holds, else to ``else``."""
    return _router(node_id, [(config["when"], config["then"])], config["else"],
                   config.get("subject", "message"))


@register_node("router", check=_check_router, schema=schemas.ROUTER,
               branches=lambda config: [*(r["to"] for r in config["routes"]),
                                        config["default"]],
               label=gettext_lazy("Router"), description=gettext_lazy(
                   "Checks its routes in order and goes to the node of the first whose "
                   "condition holds, or to the default node when none does."))
def router(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """Go to the first route whose condition holds, else to ``default``."""
    return _router(node_id, [(r.get("when") or {}, r["to"]) for r in config["routes"]],
                   config["default"], config.get("subject", "message"))


# --- annotation reply ------------------------------------------------------------------


@register_node("annotation_reply", schema=schemas.ANNOTATION_REPLY,
               branches=lambda config: [config["matched"], config["otherwise"]],
               label=gettext_lazy("Curated answer"), description=gettext_lazy(
                   "Answers with a curated question/answer pair when one matches the "
                   "message closely enough, then goes to “matched”; else goes to "
                   "“otherwise”, usually a model call."))
def annotation_reply(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """Answer from the curated question/answer pairs when one is close enough (the
    message's embedding against theirs, above the pair's threshold) and go to
    ``matched``; else go to ``otherwise`` (usually the model)."""

    async def run(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        text = conversations.text_of(state.message.get("content", ""))
        match = await curated.amatch_reply(text) if text.strip() else None
        if match is None:
            runtime.stream_writer({"type": "annotation", "node": node_id, "match": None})
            return {"outputs": {**state.outputs, node_id: {"to": config["otherwise"]}}}
        found = match.as_dict()
        runtime.stream_writer({"type": "annotation", "node": node_id, "match": found})
        runtime.stream_writer({"type": "token", "text": match.answer})
        return {"reply": {"content": match.answer, "model": "annotation",
                          "models": ["annotation"], "finish_reason": "stop", "usage": {}},
                "outputs": {**state.outputs,
                            node_id: {"to": config["matched"], "match": found}}}

    return run


# --- HTTP tool -------------------------------------------------------------------------


def tool_url(url: Any) -> URL | None:
    """``url`` as the HTTP tool calls it, when that is http(s) to a host of
    ``OPENCLAW_WORKFLOW_HTTP_HOSTS``; else None. The one parser of both the save-time
    check and the call: yarl, aiohttp's own, so no URL reads one way when saved and
    another when called (a backslash, user info, whitespace, a bad port: refused)."""
    if not isinstance(url, str) or not url.isprintable() or " " in url or "\\" in url:
        return None
    try:
        parsed = URL(url)
        port = parsed.explicit_port
    except (ValueError, TypeError):
        return None
    host = parsed.host
    if (parsed.scheme not in ("http", "https") or not host or not parsed.absolute
            or parsed.user is not None or parsed.password is not None):
        return None
    allowed = settings.OPENCLAW_WORKFLOW_HTTP_HOSTS
    return parsed if host in allowed or f"{host}:{port}" in allowed else None


def _check_http(config: dict[str, Any]) -> list[str]:
    if tool_url(config["url"]) is None:
        return [_("“url” must be an http(s) URL whose host is allowed by "
                  "OPENCLAW_WORKFLOW_HTTP_HOSTS (now: %(hosts)s).")
                % {"hosts": ", ".join(settings.OPENCLAW_WORKFLOW_HTTP_HOSTS) or "none"}]
    return []


@register_node("http_tool", check=_check_http, schema=schemas.HTTP_TOOL,
               label=gettext_lazy("HTTP call"), description=gettext_lazy(
                   "Calls an allowed HTTP endpoint (GET, or POST with the message, user, "
                   "conversation and outputs as JSON) and keeps its answer as a named "
                   "output."))
def http_tool(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """Call an allowlisted HTTP endpoint; its answer is kept under ``output``."""
    url, method = config["url"], config.get("method", "GET")
    output = config.get("output", node_id)
    timeout = float(config.get("timeout_s", schemas.HTTP_TIMEOUT_DEFAULT_S))

    async def run(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        target = tool_url(url)  # the allowlist may have shrunk since the save
        if target is None:
            return {"error": {"code": "tool_not_allowed", "status": 403, "message": _(
                "The HTTP tool's host is no longer allowed.")}}
        payload = {"message": conversations.text_of(state.message.get("content", "")),
                   "user": state.user, "conversation_id": state.conversation_id,
                   "outputs": state.outputs}
        try:
            result = await _call(target, method, payload, timeout)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return {"error": {"code": "tool_failed", "status": 502, "message": _(
                "The HTTP tool “%(node)s” failed: %(error)s")
                % {"node": node_id, "error": exc.__class__.__name__}}}
        runtime.stream_writer({"type": "tool", "node": node_id, "status": result["status"]})
        return {"outputs": {**state.outputs, output: result}}

    return run


async def _call(url: URL, method: str, payload: dict, timeout: float) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        kwargs: dict[str, Any] = {"json": payload} if method == "POST" else {}
        async with session.request(method, url, allow_redirects=False, **kwargs) as response:
            raw = await response.content.read(HTTP_MAX_BYTES)
            text = raw.decode("utf-8", errors="replace")
            body: Any = text
            if response.content_type == "application/json":
                try:
                    body = json.loads(text)
                except ValueError:
                    pass
            return {"status": response.status, "body": body}


# --- human approval --------------------------------------------------------------------


def decision_of(value: Any) -> dict[str, Any]:
    """A resume value as ``{"action", "content"?, "reason"?}`` (a bare action string
    is accepted; anything else is a rejection, so nothing unapproved goes out)."""
    if isinstance(value, str):
        value = {"action": value}
    if not isinstance(value, dict) or value.get("action") not in ACTIONS:
        return {"action": "reject", "reason": _("Not a decision: approve, edit or reject.")}
    if value["action"] == "edit":
        content = value.get("content")
        if isinstance(content, list):  # content parts: their text
            content = conversations.text_of(content)
        if not isinstance(content, str) or not content.strip():
            return {"action": "reject", "reason": _("An edit needs its “content”.")}
        return {**value, "content": content}
    return value


@register_node("human_approval", schema=schemas.HUMAN_APPROVAL,
               label=gettext_lazy("Human approval"), description=gettext_lazy(
                   "Pauses the run until a person approves, edits or rejects the reply (or "
                   "the message, when there is no reply yet)."))
def human_approval(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """Stop until a person approves, edits or rejects (LangGraph ``interrupt``)."""
    question = config.get("prompt") or _("Approve this answer?")

    async def run(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        decision = decision_of(interrupt({
            "node": node_id, "prompt": question, "reply": state.reply.get("content"),
            "message": conversations.text_of(state.message.get("content", ""))}))
        runtime.stream_writer({"type": "approval", "node": node_id, **decision})
        if decision["action"] == "approve":
            return {"outputs": {**state.outputs, node_id: decision}}
        if decision["action"] == "edit":
            if state.reply:
                return {"reply": {**state.reply, "content": decision["content"]},
                        "outputs": {**state.outputs, node_id: decision}}
            return {"message": {**state.message, "content": decision["content"]},
                    "outputs": {**state.outputs, node_id: decision}}
        return {"error": {"code": "rejected", "status": 409,
                          "message": decision.get("reason") or _("Rejected by a reviewer.")}}

    return run


# --- composition -----------------------------------------------------------------------


@register_node("sub_workflow", schema=schemas.SUB_WORKFLOW, label=gettext_lazy("Sub-workflow"),
               description=gettext_lazy(
                   "Runs another workflow here, as a part of this one, on the same "
                   "conversation and state."))
def sub_workflow(node_id: str, config: dict[str, Any], ctx: Any) -> Any:
    """Another workflow, run as a subgraph on the same state."""
    return ctx.subgraph(config["workflow"])


@register_node("end", terminal=True, schema=schemas.NO_SETTINGS, label=gettext_lazy("End"),
               description=gettext_lazy("Ends the run here; the reply so far is the answer."))
def end(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """The run ends here."""

    async def run(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        return {}

    return run
