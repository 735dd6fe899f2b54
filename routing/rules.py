"""Services of routing rules: the facts of a request, evaluating a condition with
an explanation, and ``resolve_route`` over a per-process copy of the rules.

The rules and endpoints are read per process as one ``RoutingTable``, a
``core.snapshot.VersionedSnapshot``: saving or deleting a rule or an endpoint, in any
process, replaces its version token once the transaction commits, and the next request
everywhere reloads the table (once per change; no query otherwise).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from django.conf import settings
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from modeltranslation.utils import build_localized_fieldname

from core.snapshot import VersionedSnapshot

from .explain import describe_condition, group_line, leaf_line, shown
from .models import CONDITION_FIELDS, ModelEndpoint, RoutingRule

VERSION_KEY = "routing:rules:version"


# --- facts of a request ----------------------------------------------------------------


def _is_wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """An ESTIMATE of the prompt's tokens until per-model tokenizers are wired in:
    about 4 characters per token for most text, one token per CJK (wide) character,
    plus 4 tokens of framing per message."""
    total = 0
    for message in messages:
        text = message_text(message)
        wide = 0 if text.isascii() else sum(1 for c in text if _is_wide(c))
        total += wide + -(-(len(text) - wide) // 4) + 4
    return total


def message_text(message: dict[str, Any]) -> str:
    """The text of one chat message: a string, or the ``text`` parts of a list."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content
                         if isinstance(p, dict) and p.get("type") == "text")
    return ""


@dataclass
class RequestFacts:
    """What rules may look at. ``api_key`` is the key's public prefix, never the secret."""

    model: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    api_key: str = ""
    user: str = ""
    groups: frozenset[str] = frozenset()
    language: str = ""
    flags: frozenset[str] = frozenset()

    @cached_property
    def context_length(self) -> int:
        return estimate_tokens(self.messages)

    @property
    def content(self) -> str:
        return "\n".join(message_text(m) for m in self.messages)

    def __post_init__(self) -> None:
        self.groups = frozenset(self.groups or ())
        self.flags = frozenset(self.flags or ())

    def value(self, name: str) -> Any:
        """The fact a condition's ``field`` names."""
        if name == "group":
            return self.groups
        if name == "flag":
            return self.flags
        return getattr(self, name) or ("" if name != "context_length" else 0)


# --- evaluation -----------------------------------------------------------------------


def _compare(kind: str, op: str, actual: Any, expected: Any) -> bool:
    if kind == "set":
        wanted = set(expected) if isinstance(expected, list) else {expected}
        hit = bool(actual & wanted)
        return hit if op in ("eq", "in") else not hit
    if op == "eq":
        return actual == expected
    if op == "ne":
        return actual != expected
    if op == "in":
        return actual in expected
    if op == "not_in":
        return actual not in expected
    if op in ("gt", "gte", "lt", "lte"):
        return {"gt": actual > expected, "gte": actual >= expected,
                "lt": actual < expected, "lte": actual <= expected}[op]
    if op == "contains":
        return expected in actual
    if op == "icontains":
        return expected.casefold() in actual.casefold()
    if op == "startswith":
        return actual.startswith(expected)
    return re.search(expected, actual) is not None  # regex: validated when saved


def evaluate(condition: dict, facts: RequestFacts, indent: str = "") -> tuple[bool, list[str]]:
    """Whether ``facts`` satisfy ``condition``, with one explanation line per test (in
    the active language)."""
    if not condition:
        return True, [indent + group_line("always", True)]
    if "not" in condition:
        inner, lines = evaluate(condition["not"], facts, indent + "  ")
        return not inner, [indent + group_line("not", not inner), *lines]
    for key in ("all", "any"):
        if key in condition:
            lines = []
            results = []
            for item in condition[key]:  # short-circuits like Python's all()/any()
                ok, sub = evaluate(item, facts, indent + "  ")
                results.append(ok)
                lines += sub
                if ok != (key == "all"):
                    break
            result = all(results) if key == "all" else any(results)
            return result, [indent + group_line(key, result), *lines]
    name, op, expected = condition["field"], condition["op"], condition["value"]
    kind = CONDITION_FIELDS[name][0]
    actual = facts.value(name)
    result = _compare(kind, op, actual, expected)
    return result, [indent + leaf_line(condition, actual, result)]


# --- the per-process copy and its cross-process version ------------------------------


@dataclass(frozen=True)
class RuleSnapshot:
    """One enabled rule as routing reads it. ``name`` is the rule's name in the default
    language (headers, logs); ``label`` is the name in the active language (explanations)."""

    id: int
    name: str
    priority: int
    condition: dict
    target_model: str
    fallbacks: tuple[str, ...]
    names: tuple[tuple[str, str], ...] = ()  # (language, name) where translated

    @property
    def label(self) -> str:
        return dict(self.names).get(get_language() or "", "") or self.name


@dataclass(frozen=True)
class RoutingTable:
    """What routing reads on every request, as one version of the rows: the enabled
    rules in priority order, the global last resort (the last catch-all rule's
    fallbacks) and the enabled endpoints by model name (by id within a name)."""

    rules: tuple[RuleSnapshot, ...] = ()
    last_resort: tuple[str, ...] = ()
    endpoints: dict[str, list[ModelEndpoint]] = field(default_factory=dict)
    registered: frozenset[str] = frozenset()


def load_table(version: str) -> RoutingTable:
    rules = tuple(RuleSnapshot(r.pk, _default_name(r), r.priority, r.condition or {},
                               r.target_model, tuple(r.fallbacks or ()), _names(r))
                  for r in RoutingRule.objects.filter(enabled=True).order_by("priority", "id"))
    catch_alls = [r for r in rules if not r.condition]
    endpoints: dict[str, list[ModelEndpoint]] = {}
    for endpoint in ModelEndpoint.objects.filter(enabled=True).order_by("name", "id"):
        endpoints.setdefault(endpoint.name, []).append(endpoint)
    return RoutingTable(rules, catch_alls[-1].fallbacks if catch_alls else (), endpoints,
                        frozenset(endpoints))


def _default_name(rule: RoutingRule) -> str:
    field = build_localized_fieldname("name", settings.LANGUAGE_CODE)
    return getattr(rule, field, "") or rule.name_en or rule.name  # type: ignore[attr-defined]


def _names(rule: RoutingRule) -> tuple[tuple[str, str], ...]:
    return tuple((code, getattr(rule, build_localized_fieldname("name", code), "") or "")
                 for code, _label in settings.LANGUAGES)


# Saving or deleting a rule or an endpoint replaces the token once the transaction
# commits (``rules_changed`` is their post_save/post_delete receiver); health written with
# ``.update()`` does not, so the gateway reads health from the circuits, never the rows.
TABLE: VersionedSnapshot[RoutingTable] = VersionedSnapshot(VERSION_KEY, load_table)
current_version = TABLE.current_version
bump_version = TABLE.bump  # invalidate every process's copy (after a change is committed)
rules_changed = TABLE.changed
clear_local_copy = TABLE.clear  # tests; the next resolve reloads


# --- resolving ------------------------------------------------------------------------


@dataclass
class RuleTrace:
    rule: RuleSnapshot
    matched: bool
    lines: list[str]


@dataclass
class RouteDecision:
    """The first matching rule (None when none matched), the model to call, the
    models to try next in order, and why."""

    rule: RuleSnapshot | None
    target_model: str
    fallbacks: list[str]
    explanation: list[str]
    trace: list[RuleTrace] = field(default_factory=list)
    unregistered: list[str] = field(default_factory=list)

    @property
    def chain(self) -> list[str]:
        return [self.target_model, *self.fallbacks]


def resolve_route(facts: RequestFacts, copy: RoutingTable | None = None) -> RouteDecision:
    """Evaluate the enabled rules in priority order; the first match decides. ``copy``:
    a routing table the caller has checked against the version token itself."""
    copy = copy or TABLE.get()
    explanation = [_("model %(model)s, context length ≈ %(tokens)d tokens (estimate)") % {
        "model": shown(facts.model), "tokens": facts.context_length}]
    trace: list[RuleTrace] = []
    for rule in copy.rules:
        matched, lines = evaluate(rule.condition, facts)
        trace.append(RuleTrace(rule, matched, lines))
        explanation.append(_("[%(priority)d] %(rule)s: %(condition)s → %(verdict)s") % {
            "priority": rule.priority, "rule": rule.label,
            "condition": describe_condition(rule.condition),
            "verdict": _("MATCH") if matched else _("no")})
        explanation += [f"    {line}" for line in lines]
        if matched and not rule.condition and facts.model in copy.registered:
            # A catch-all rule routes what nothing else claimed; a model the client
            # named and the registry serves is honoured, the rule's models back it up.
            explanation.append(_("%(model)s is registered: served as asked, the catch-all "
                                 "rule's models follow as fallbacks")
                               % {"model": shown(facts.model)})
            return _decision(rule, facts.model, [rule.target_model, *rule.fallbacks], copy,
                             explanation, trace)
        if matched:
            return _decision(rule, rule.target_model, list(rule.fallbacks), copy,
                             explanation, trace)
    explanation.append(_("no rule matched: the requested model is used as asked"))
    return _decision(None, facts.model, [], copy, explanation, trace)


async def aresolve_route(facts: RequestFacts) -> RouteDecision:
    """``resolve_route`` for async code: this process's table checked against the token
    from the event loop; it is (re)loaded in a thread only when it changed."""
    return resolve_route(facts, await TABLE.aget())


def _decision(rule: RuleSnapshot | None, target: str, fallbacks: list[str],
              copy: RoutingTable,
              explanation: list[str], trace: list[RuleTrace]) -> RouteDecision:
    for name in copy.last_resort:  # the global last resort ends every chain
        if name != target and name not in fallbacks:
            fallbacks.append(name)
    decision = RouteDecision(rule, target, fallbacks, explanation, trace)
    decision.unregistered = [n for n in decision.chain if n and n not in copy.registered]
    explanation.append(_("route: %(chain)s") % {"chain": " → ".join(decision.chain)})
    if decision.unregistered:
        explanation.append(_("no enabled endpoint for: %(models)s")
                           % {"models": ", ".join(decision.unregistered)})
    return decision
