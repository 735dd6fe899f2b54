"""What a plugin is: the request and response it sees, the exception that refuses a
request, and ``PluginBase`` with every hook a plugin may define.

A plugin subclasses ``PluginBase``, declares its metadata (``name``, ``version``,
``description``, a JSON schema for its config and the defaults) and overrides the
hooks it needs; a hook it leaves alone passes the value through. Plugins are found
through the ``openclaw.plugins`` entry-point group or in the plugin folder
(``plugins.discovery``) and run by ``plugins.chain.PluginChain``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from core import audit as audit_trail

if TYPE_CHECKING:  # django-stubs' alias, for type checking only (a dev dependency)
    from django_stubs_ext import StrOrPromise

logger = logging.getLogger(__name__)

ACTIONS_KEY = "plugin_actions"


@dataclass
class PluginRequest:
    """One chat request on its way to a model."""

    messages: list[dict]
    """OpenAI shape: ``{"role": ..., "content": str | [{"type": "text", "text": ...}]}``."""
    model: str
    user: str = ""
    api_key: str = ""
    """The API key's public prefix, never the secret."""
    conversation_id: str = ""
    surface: str = "api"
    """Where the request comes from: ``api`` (``/v1``) or ``studio`` (a studio
    conversation); a plugin row runs only where it is scoped (``Plugin.covers``)."""
    workflow: str = ""
    """The slug of the workflow running the request, if one is."""
    user_name: str = ""
    """How to address the user (the studio's username); empty when unknown."""
    flags: set[str] = field(default_factory=set)
    """Facts for routing rules (field ``flag``), e.g. ``sensitive_data``."""
    metadata: dict = field(default_factory=dict)
    """``metadata["plugin_actions"]``: ``{plugin, action, detail}`` for each thing done."""


@dataclass
class PluginResponse:
    """A model's whole answer on its way back to the caller."""

    content: str
    model: str
    request: PluginRequest
    metadata: dict = field(default_factory=dict)
    """``metadata["plugin_actions"]``: what post-processing did."""
    tool_calls: list[dict] | None = None
    """The functions the model calls (OpenAI's ``{id, type, function: {name, arguments}}``)
    when it calls any: a post hook may refuse or rewrite them like the text."""


class PluginBlocked(Exception):
    """A plugin refuses the request (or the answer); ``message`` is for the user."""

    def __init__(self, plugin: str, message: str):
        super().__init__(message)
        self.plugin = plugin
        self.message = str(message)

    def __str__(self) -> str:
        return self.message


class PluginBase:
    """The base of every plugin: declared metadata and typed hooks.

    Hooks run in the order of the ``Plugin`` rows (``order``); post-processing and
    streaming run in reverse order. A hook may change its argument in place, but
    must return the value for the next plugin. One instance serves many requests at
    once (threads and coroutines): keep per-request data in the request, the response
    or the stream's ``state``, never on ``self``.
    """

    name: ClassVar[str] = ""
    """Unique, stable name; what a ``Plugin`` row refers to (entry-point name)."""
    version: ClassVar[str] = ""
    description: ClassVar[StrOrPromise] = ""
    """Shown in the admin; may be lazily translated (``gettext_lazy``)."""
    config_schema: ClassVar[dict] = {"type": "object"}
    """JSON schema (draft 2020-12) of ``config``; the admin validates rows against it."""
    defaults: ClassVar[dict] = {}
    """Config values a row may leave out; they must validate against the schema."""

    def __init__(self, config: dict | None = None):
        self.config: dict[str, Any] = {**copy.deepcopy(self.defaults), **(config or {})}

    # --- hooks -------------------------------------------------------------------------

    def pre_process(self, request: PluginRequest) -> PluginRequest:
        """Before routing: rewrite, flag or refuse (``PluginBlocked``) the request."""
        return request

    def post_process(self, response: PluginResponse) -> PluginResponse:
        """After generation: rewrite or refuse the whole answer."""
        return response

    def stream_delta(self, text: str, state: dict) -> str:
        """One streamed delta in, the text to emit now out (may hold some back in
        ``state``, the per-request scratch of this plugin; ``state["request"]`` is the
        request, ``state["metadata"]`` where streaming actions are recorded)."""
        return text

    def stream_flush(self, state: dict) -> str:
        """The stream has ended: return what ``stream_delta`` still holds back."""
        return ""

    @classmethod
    def check_config(cls, config: dict) -> list[tuple[str, str]]:
        """Problems the schema cannot express, as ``(path, message)``; ``config`` has
        the defaults filled in and already satisfies the schema."""
        return []

    # --- helpers for plugins -------------------------------------------------------------

    def record(self, metadata: dict, action: str, detail: dict | None = None) -> None:
        """Note an action in ``metadata["plugin_actions"]`` (shown in the studio)."""
        metadata.setdefault(ACTIONS_KEY, []).append(
            {"plugin": self.name, "action": action, "detail": dict(detail or {})})

    def audit(self, action: str, request: PluginRequest | None, detail: dict | None = None) -> None:
        """An audit event about ``request`` (never its content)."""
        context = {"conversation_id": request.conversation_id, "model": request.model,
                   "api_key": request.api_key} if request else {}
        audit_event(f"plugin.{action}", actor=request.user if request else "",
                    target=self.name, detail={**context, **(detail or {})})


def audit_event(action: str, *, actor: str = "", target: str = "",
                detail: dict | None = None) -> None:
    """Record an audit event without ever failing the request that causes it."""
    try:
        audit_trail.audit(action, actor=actor, target=target, detail=detail)
    except Exception:  # an audit failure must not fail or block the request
        logger.exception("could not record audit event %s", action)


# --- message text, for plugins -----------------------------------------------------------


def message_texts(message: dict) -> list[str]:
    """The text of a chat message: its string content, or its ``text`` parts."""
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [part["text"] for part in content
                if isinstance(part, dict) and part.get("type") == "text"
                and isinstance(part.get("text"), str)]
    return []


def map_message_text(message: dict, change: Callable[[str], str]) -> None:
    """Replace each text of ``message`` (string content or ``text`` parts) in place."""
    content = message.get("content")
    if isinstance(content, str):
        message["content"] = change(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" \
                    and isinstance(part.get("text"), str):
                part["text"] = change(part["text"])
