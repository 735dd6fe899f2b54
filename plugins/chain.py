"""The plugin chain: the enabled ``Plugin`` rows, in order, each with its plugin
loaded and configured, and ``get_chain()`` / ``aget_chain()`` over a per-process copy.

Pre-processing runs the plugins in order, post-processing and streaming in reverse
order; each gets the previous value and returns the next. A plugin that raises is
skipped (logged, audited, noted in ``metadata["plugin_actions"]``) unless its row is
fail-closed: then the request is refused with ``PluginBlocked``. A row that cannot be
loaded is a problem of the chain (``problems``, shown in the admin); fail-closed, it
refuses every request until it is fixed.

A row runs only where it is scoped (``Scope``): the studio's conversations, all
``/v1`` traffic, or the requests of named API keys, models or workflows — so a
gateway passes ``/v1`` traffic through unchanged unless an operator asked otherwise.

When streaming, feed each delta through ``chain.stream_filter(request)`` and emit what
``feed`` returns, then ``flush()`` at the end; ``post_process`` is for whole answers.

The chain is kept per process as a ``core.snapshot.VersionedSnapshot``: saving or
deleting a ``Plugin`` row replaces its token once the transaction commits (and so does
``reload_plugins``, for a changed plugin folder), and every process rebuilds it.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.utils.translation import gettext

from core.snapshot import VersionedSnapshot
from routing.key_models import ApiKey

from .base import PluginBase, PluginBlocked, PluginRequest, PluginResponse, audit_event
from .discovery import Problem, config_problems, discover, resolve
from .models import Plugin

logger = logging.getLogger(__name__)

VERSION_KEY = "plugins:chain:version"


@dataclass(frozen=True)
class Scope:
    """Where a row runs: a request is covered when any of these names it."""

    studio: bool = True
    all_api: bool = True
    key_prefixes: frozenset[str] = frozenset()  # the scoped keys' families, every key
    models: tuple[str, ...] = ()  # fnmatch patterns
    workflows: frozenset[str] = frozenset()

    def covers(self, request: PluginRequest) -> bool:
        if request.surface == "studio":
            if self.studio:
                return True
        elif self.all_api or request.api_key in self.key_prefixes:
            return True
        return bool(request.workflow and request.workflow in self.workflows) or any(
            fnmatch.fnmatchcase(request.model, pattern) for pattern in self.models)

    @classmethod
    def of(cls, row: Plugin) -> Scope:
        families = {key.family for key in row.api_keys.all()}
        prefixes = frozenset(ApiKey.objects.filter(family__in=families)
                             .values_list("prefix", flat=True)) if families else frozenset()
        return cls(studio=row.in_studio, all_api=row.all_api, key_prefixes=prefixes,
                   models=tuple(Plugin.names(row.for_models)),
                   workflows=frozenset(Plugin.names(row.for_workflows)))


@dataclass
class Stage:
    """One loaded row: its plugin (None when a fail-closed row could not be loaded)."""

    row_id: int
    name: str
    plugin: PluginBase | None
    fail_closed: bool = False
    scope: Scope = field(default_factory=Scope)

    def overrides(self, hook: str) -> bool:
        return self.plugin is None or getattr(type(self.plugin), hook) is not getattr(
            PluginBase, hook)

    def call(self, hook: str, value: Any, metadata: dict,
             request: PluginRequest | None) -> Any:
        """``plugin.<hook>(value)``; a failure passes ``value`` on (or refuses)."""
        if self.plugin is None:
            raise PluginBlocked(self.name, _unavailable(self.name))
        return self._guarded(hook, partial(getattr(self.plugin, hook), value), value, metadata,
                             request)

    def stream(self, hook: str, text: str, state: dict, metadata: dict,
               request: PluginRequest) -> str:
        """``stream_delta(text, state)`` or ``stream_flush(state)``; a plugin that fails
        lets this stream through unchanged from then on."""
        if state.get("failed"):
            return text
        if self.plugin is None:
            raise PluginBlocked(self.name, _unavailable(self.name))
        run = partial(self.plugin.stream_flush, state) if hook == "stream_flush" \
            else partial(self.plugin.stream_delta, text, state)
        result = self._guarded(hook, run, state, metadata, request)
        if result is state:  # failed (and not fail-closed)
            state["failed"] = True
            return text
        return result

    def _guarded(self, hook: str, run: Callable[[], Any], fallback: Any, metadata: dict,
                 request: PluginRequest | None) -> Any:
        try:
            result = run()
        except PluginBlocked as blocked:
            blocked.plugin = blocked.plugin or self.name
            raise
        except Exception as exc:
            return self.failed(hook, exc, fallback, metadata, request)
        expected = str if hook.startswith("stream_") else type(fallback)
        if not isinstance(result, expected):
            error = TypeError(f"{hook} returned {type(result).__name__}, "
                              f"not {expected.__name__}")
            return self.failed(hook, error, fallback, metadata, request)
        return result

    def failed(self, hook: str, exc: Exception, value: Any, metadata: dict,
               request: PluginRequest | None) -> Any:
        logger.error("plugin %s failed in %s (%s)", self.name, hook,
                     "refusing the request" if self.fail_closed else "skipped",
                     exc_info=(type(exc), exc, exc.__traceback__))
        detail = {"hook": hook, "error": f"{type(exc).__name__}: {exc}"[:500],
                  "fail_closed": self.fail_closed}
        if request is not None:
            detail["conversation_id"] = request.conversation_id
        audit_event("plugin.error", actor=request.user if request else "", target=self.name,
                    detail=detail)
        metadata.setdefault("plugin_actions", []).append(
            {"plugin": self.name, "action": "refused" if self.fail_closed else "skipped",
             "detail": {"hook": hook, "error": detail["error"]}})
        if self.fail_closed:
            raise PluginBlocked(self.name, _unavailable(self.name)) from exc
        return value


def _unavailable(name: str) -> str:
    return gettext("The request was refused: the “%(plugin)s” plugin, which must check "
                   "every request, is not working. Try again later or tell the operator.") % {
        "plugin": name}


class StreamFilter:
    """Streamed deltas through each plugin's ``stream_delta`` (reverse order), with a
    scratch ``state`` per plugin; ``metadata`` collects what the plugins did."""

    def __init__(self, stages: list[Stage], request: PluginRequest):
        self.request = request
        self.metadata: dict = {}
        self._stages = [(stage, {"request": request, "metadata": self.metadata})
                        for stage in stages
                        if stage.overrides("stream_delta") or stage.overrides("stream_flush")]

    def feed(self, text: str) -> str:
        """One delta in; the text to send now out (possibly "": something is held back)."""
        for stage, state in self._stages:
            if not text:
                break
            text = self._run(stage, state, "stream_delta", text)
        return text

    def flush(self) -> str:
        """The stream ended: what the plugins still hold back, filtered by the later ones."""
        text = ""
        for stage, state in self._stages:
            if text:
                text = self._run(stage, state, "stream_delta", text)
            text += self._run(stage, state, "stream_flush", "")
        return text

    def _run(self, stage: Stage, state: dict, hook: str, text: str) -> str:
        return stage.stream(hook, text, state, self.metadata, self.request)


@dataclass
class PluginChain:
    """The loaded chain of one version of the ``Plugin`` rows."""

    stages: list[Stage] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    version: str | None = None

    def for_request(self, request: PluginRequest) -> list[Stage]:
        """The stages whose scope covers ``request``, in order."""
        return [stage for stage in self.stages if stage.scope.covers(request)]

    def pre_process(self, request: PluginRequest) -> PluginRequest:
        for stage in self.for_request(request):
            if stage.overrides("pre_process"):
                request = stage.call("pre_process", request, request.metadata, request)
        return request

    def post_process(self, response: PluginResponse) -> PluginResponse:
        for stage in reversed(self.for_request(response.request)):
            if stage.overrides("post_process"):
                response = stage.call("post_process", response, response.metadata,
                                      response.request)
        return response

    def stream_filter(self, request: PluginRequest) -> StreamFilter:
        return StreamFilter(list(reversed(self.for_request(request))), request)

    @property
    def names(self) -> list[str]:
        return [stage.name for stage in self.stages]


def build_chain(version: str | None = None) -> PluginChain:
    """Load the enabled rows in order; a row that cannot be loaded is a problem."""
    found = discover()
    chain = PluginChain(problems=list(found.problems), version=version)
    for row in Plugin.objects.filter(enabled=True).order_by("order", "id") \
            .prefetch_related("api_keys"):
        scope = Scope.of(row)
        try:
            plugin = _load(row.name, row.config, found)
        except Exception as exc:  # plugin code (import, __init__): never fatal here
            message = str(exc) if isinstance(exc, LookupError | ValueError) \
                else f"{type(exc).__name__}: {exc}"
            logger.warning("plugin row %s (%s) not loaded: %s", row.pk, row.name, message)
            chain.problems.append(Problem(f"row {row.pk}", message, row.name))
            if row.fail_closed:
                chain.stages.append(Stage(row.pk, row.name, None, fail_closed=True,
                                          scope=scope))
            continue
        chain.stages.append(Stage(row.pk, row.name, plugin, fail_closed=row.fail_closed,
                                  scope=scope))
    return chain


def _load(name: str, config: Any, found) -> PluginBase:
    cls = resolve(name, found)
    problems = config_problems(cls, config)
    if problems:
        raise ValueError(gettext("invalid configuration: %(problems)s") % {
            "problems": "; ".join(f"{p}: {m}" if p else m for p, m in problems)})
    return cls(config)


# --- the per-process copy and its cross-process version ------------------------------

# ``/v1`` reads the token in its first Redis round trip (prefetch), so a request that
# finds the chain current makes no query and no extra trip.
CHAIN: VersionedSnapshot[PluginChain] = VersionedSnapshot(VERSION_KEY, build_chain,
                                                          prefetch=True)
current_version = CHAIN.current_version
bump_version = CHAIN.bump  # invalidate every process's chain (after a change is committed)
plugins_changed = CHAIN.changed  # post_save/post_delete receiver
clear_local_copy = CHAIN.clear  # tests; the next call rebuilds
get_chain = CHAIN.get  # this process's chain, rebuilt when any process changed a row
aget_chain = CHAIN.aget  # the same for async code: a thread only to rebuild


def successor_created(sender: type, instance: ApiKey, created: bool = False,
                      **kwargs: Any) -> None:
    """A new key of a family a row is scoped to (a rotation's successor) is covered too."""
    if created and Plugin.objects.filter(api_keys__family=instance.family).exists():
        plugins_changed()
