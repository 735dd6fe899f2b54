"""The built-in node types of workflows. Each factory gets the node's id, its
validated config and the compiler's context, and returns what LangGraph runs: an
async function of ``(state, runtime)`` returning a partial update, like the
conversation graph's nodes (which several of these wrap), or a compiled subgraph.

Config keys (all optional unless named):

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
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from yarl import URL

from routing.models import condition_problems
from routing.rules import RequestFacts, evaluate

from .. import conversations, curated
from ..graph import nodes as conversation
from ..graph.context import Context, with_sink
from ..graph.state import State
from .registry import register_node

Node = conversation.Node
HTTP_MAX_TIMEOUT_S = 30.0
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


def _check_recall(config: dict[str, Any]) -> list[str]:
    if not isinstance(config.get("long_term", True), bool):
        return [_("“long_term” must be true or false.")]
    return []


@register_node("memory_recall", check=_check_recall)
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


def _check_plugin(config: dict[str, Any]) -> list[str]:
    if config.get("phase", "pre") not in ("pre", "post"):
        return [_("“phase” must be “pre” or “post”.")]
    return []


@register_node("plugin", check=_check_plugin)
def plugin(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """The plugin chain: pre hooks on the prompt, or post hooks on the reply."""
    if config.get("phase", "pre") == "post":
        return _inner(conversation.post_process)
    return _inner(conversation.pre_process)


@register_node("route")
def route(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """The routing rules' decision for the prompt, as an event."""
    return _inner(conversation.route)


def _check_llm(config: dict[str, Any]) -> list[str]:
    problems = [_("“%(key)s” must be a non-empty string.") % {"key": key}
                for key in ("model", "prompt", "output")
                if key in config and (not isinstance(config[key], str) or not config[key])]
    if config.get("output") in ("reply", "message"):
        problems.append(_("“output” must not be “reply” or “message”; leave it out to "
                          "make the answer the reply."))
    return problems


@register_node("llm", check=_check_llm)
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


@register_node("memory_write")
def memory_write(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """Store the reply (encrypted) and remember what is worth keeping."""
    return _inner(conversation.remember)


# --- routers ---------------------------------------------------------------------------


def _check_subject(config: dict[str, Any]) -> list[str]:
    subject = config.get("subject", "message")
    return [] if isinstance(subject, str) and subject else [
        _("“subject” must be “message”, “reply” or an output's name.")]


def _check_when(condition: Any, where: str) -> list[str]:
    return [f"{where}.{path}: {message}" if path != "condition" else f"{where}: {message}"
            for path, message in condition_problems(condition)]


def _check_condition(config: dict[str, Any]) -> list[str]:
    problems = _check_subject(config) + _check_when(config.get("when"), "when")
    problems += [_("“%(key)s” must name a node.") % {"key": key}
                 for key in ("then", "else") if not isinstance(config.get(key), str)]
    return problems


def _check_router(config: dict[str, Any]) -> list[str]:
    routes = config.get("routes")
    if not isinstance(routes, list) or not routes:
        return [_("“routes” must be a non-empty list of {when, to}.")]
    problems = _check_subject(config)
    for index, item in enumerate(routes):
        if not isinstance(item, dict) or not isinstance(item.get("to"), str):
            problems.append(_("routes[%(i)d] must be {when, to} with “to” naming a node.")
                            % {"i": index})
            continue
        problems += _check_when(item.get("when"), f"routes[{index}].when")
    if not isinstance(config.get("default"), str):
        problems.append(_("“default” must name a node."))
    return problems


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


@register_node("condition", check=_check_condition, requires=("when", "then", "else"),
               branches=lambda config: [config["then"], config["else"]])
def condition(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """Go to ``then`` when the condition holds, else to ``else``."""
    return _router(node_id, [(config["when"], config["then"])], config["else"],
                   config.get("subject", "message"))


@register_node("router", check=_check_router, requires=("routes", "default"),
               branches=lambda config: [*(r["to"] for r in config["routes"]),
                                        config["default"]])
def router(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """Go to the first route whose condition holds, else to ``default``."""
    return _router(node_id, [(r.get("when") or {}, r["to"]) for r in config["routes"]],
                   config["default"], config.get("subject", "message"))


# --- annotation reply ------------------------------------------------------------------


def _check_annotation_reply(config: dict[str, Any]) -> list[str]:
    return [_("“%(key)s” must name a node.") % {"key": key}
            for key in ("matched", "otherwise") if not isinstance(config.get(key), str)]


@register_node("annotation_reply", check=_check_annotation_reply,
               requires=("matched", "otherwise"),
               branches=lambda config: [config["matched"], config["otherwise"]])
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
    url, problems = config.get("url"), []
    if tool_url(url) is None:
        problems.append(_("“url” must be an http(s) URL whose host is allowed by "
                          "OPENCLAW_WORKFLOW_HTTP_HOSTS (now: %(hosts)s).")
                        % {"hosts": ", ".join(settings.OPENCLAW_WORKFLOW_HTTP_HOSTS) or "none"})
    if config.get("method", "GET") not in ("GET", "POST"):
        problems.append(_("“method” must be GET or POST."))
    timeout = config.get("timeout_s", 10)
    if (not isinstance(timeout, int | float) or isinstance(timeout, bool)
            or not 0 < timeout <= HTTP_MAX_TIMEOUT_S):
        problems.append(_("“timeout_s” must be a number of seconds, at most %(max)d.")
                        % {"max": HTTP_MAX_TIMEOUT_S})
    return problems


@register_node("http_tool", check=_check_http, requires=("url",))
def http_tool(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """Call an allowlisted HTTP endpoint; its answer is kept under ``output``."""
    url, method = config["url"], config.get("method", "GET")
    output, timeout = config.get("output", node_id), float(config.get("timeout_s", 10))

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


@register_node("human_approval")
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


def _check_sub(config: dict[str, Any]) -> list[str]:
    slug = config.get("workflow")
    return [] if isinstance(slug, str) and slug else [_("“workflow” must name a workflow.")]


@register_node("sub_workflow", check=_check_sub, requires=("workflow",))
def sub_workflow(node_id: str, config: dict[str, Any], ctx: Any) -> Any:
    """Another workflow, run as a subgraph on the same state."""
    return ctx.subgraph(config["workflow"])


@register_node("end", terminal=True)
def end(node_id: str, config: dict[str, Any], ctx: Any) -> Node:
    """The run ends here."""

    async def run(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        return {}

    return run
