"""The config schemas (JSON Schema, draft 2020-12) of the built-in node types of
``chat.workflows.nodes`` and ``chat.workflows.agent_node``: every key their factories
and checks read, with a translated title and description the workflow editor shows
beside each field (the extensions it understands are listed in ``.registry``)."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _

from .registry import config_schema

HTTP_TIMEOUT_LIMIT_S = 30
HTTP_TIMEOUT_DEFAULT_S = 10
SLUG_PATTERN = r"^[-a-zA-Z0-9_]+$"


def prop(kind: str, title: Any, description: Any, **extra: Any) -> dict[str, Any]:
    """One property: its JSON type, title, description and other keywords."""
    return {"type": kind, "title": title, "description": description, **extra}


def node_ref(title: Any, description: Any) -> dict[str, Any]:
    """A property naming a node of the same workflow."""
    return prop("string", title, description, minLength=1, **{"x-node-ref": True})


def tool_names(title: Any, description: Any) -> dict[str, Any]:
    """A property listing tool names."""
    return prop("array", title, description, items={"type": "string", "minLength": 1},
                uniqueItems=True, **{"x-tool-ref": True})


MODEL = prop("string", _("Model"), _("A fixed model to call; left out, the run's model, "
                                     "chosen by the routing rules."),
             minLength=1, **{"x-model-ref": True})
PROMPT = prop("string", _("System prompt"), _(
    "A system prompt template put before the conversation: {{ message }}, {{ reply }}, "
    "{{ user }} and {{ outputs.<name> }} are replaced by their values."),
    minLength=1, format="textarea")
OUTPUT = prop("string", _("Output name"), _(
    "Keep the answer under this name (later nodes read it as {{ outputs.<name> }}) "
    "instead of making it the reply; such an answer is not streamed. Not “reply” or "
    "“message”."), minLength=1)
SUBJECT = prop("string", _("Subject"), _(
    "The text the conditions see as “content”: “message” (the user's message), “reply” "
    "(the answer so far) or the name of an output."), minLength=1, default="message",
    examples=["message", "reply"])
WHEN = prop("object", _("Condition"), _(
    "A routing-rule condition: {\"field\", \"op\", \"value\"}, or {\"all\": [...]}, "
    "{\"any\": [...]}, {\"not\": {...}} of conditions; {} always holds."),
    **{"x-condition": True})

MEMORY_RECALL = config_schema({
    "long_term": prop("boolean", _("Long-term memories"), _(
        "Also recall the long-term memories most like the new message; off, only the "
        "conversation's recent messages."), default=True),
})

PLUGIN = config_schema({
    "phase": prop("string", _("Phase"), _(
        "“pre”: the plugins' pre hooks on the prompt, before the model; “post”: their "
        "post hooks on the reply, after it."), enum=["pre", "post"], default="pre"),
})

NO_SETTINGS = config_schema()

LLM = config_schema({"model": MODEL, "prompt": PROMPT, "output": OUTPUT})

CONDITION = config_schema({
    "when": WHEN,
    "then": node_ref(_("Then"), _("The node the run goes to when the condition holds.")),
    "else": node_ref(_("Else"), _("The node the run goes to when it does not.")),
    "subject": SUBJECT,
}, required=("when", "then", "else"))

ROUTER = config_schema({
    "routes": prop("array", _("Routes"), _(
        "Checked in order: the run goes to the node of the first route whose condition "
        "holds."), minItems=1, items={
            "type": "object", "title": _("Route"),
            "properties": {"when": WHEN, "to": node_ref(_("Go to"), _(
                "The node the run goes to when this route's condition holds."))},
            "required": ["when", "to"], "additionalProperties": False}),
    "default": node_ref(_("Default"), _("The node the run goes to when no route's "
                                        "condition holds.")),
    "subject": SUBJECT,
}, required=("routes", "default"))

ANNOTATION_REPLY = config_schema({
    "matched": node_ref(_("When matched"), _(
        "The node the run goes to after answering from a curated question/answer pair.")),
    "otherwise": node_ref(_("Otherwise"), _(
        "The node the run goes to when no curated pair matches the message (usually a "
        "model call).")),
}, required=("matched", "otherwise"))

HTTP_TOOL = config_schema({
    "url": prop("string", _("URL"), _(
        "The http(s) URL to call; its host must be allowed by the "
        "OPENCLAW_WORKFLOW_HTTP_HOSTS setting."), minLength=1),
    "method": prop("string", _("Method"), _(
        "GET, or POST to send the message, the user, the conversation and the outputs "
        "as a JSON body."), enum=["GET", "POST"], default="GET"),
    "timeout_s": prop("number", _("Timeout (seconds)"), _(
        "How long to wait for the answer before the node fails."), exclusiveMinimum=0,
        maximum=HTTP_TIMEOUT_LIMIT_S, default=HTTP_TIMEOUT_DEFAULT_S),
    "output": prop("string", _("Output name"), _(
        "The answer ({status, body}) is kept under this name; left out, under the "
        "node's id."), minLength=1),
}, required=("url",))

HUMAN_APPROVAL = config_schema({
    "prompt": prop("string", _("Question"), _(
        "What the approver is asked; left out, “Approve this answer?”."),
        format="textarea"),
})

SUB_WORKFLOW = config_schema({
    "workflow": prop("string", _("Workflow"), _(
        "The slug (letters, digits, - and _) of the workflow run here, on this run's "
        "state."), minLength=1, pattern=SLUG_PATTERN, **{"x-workflow-ref": True}),
}, required=("workflow",))
