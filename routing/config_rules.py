"""The ``routing:`` list of the registry's YAML: routing rules matched to existing ones
by name (the default language's), each ``when`` checked with the line of its bad
part (``routing.config`` applies and exports them with the models)."""

from __future__ import annotations

from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from modeltranslation.settings import DEFAULT_LANGUAGE
from modeltranslation.utils import build_localized_fieldname

from .config_source import ApplyReport, Entry, line_of, node_at, scalar, wrong_type
from .models import RoutingRule, condition_problems

# routing: key -> (python type(s), RoutingRule field)
RULE_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), "name"),
    "priority": ((int,), "priority"),
    "enabled": ((bool,), "enabled"),
    "when": ((dict,), "condition"),
    "target": ((str,), "target_model"),
    "fallbacks": ((list,), "fallbacks"),
    "description": ((str,), "description"),
}

NAME_FIELD = build_localized_fieldname("name", DEFAULT_LANGUAGE)
DESCRIPTION_FIELD = build_localized_fieldname("description", DEFAULT_LANGUAGE)
RULE_COMPARED = (NAME_FIELD, DESCRIPTION_FIELD, "priority", "enabled", "condition",
                 "target_model", "fallbacks")


def plan_rules(nodes: list[yaml.Node], registered: set[str],
                problems: list[tuple[int, str]], warnings: list[str]) -> list[RoutingRule]:
    planned: list[RoutingRule] = []
    seen: dict[str, int] = {}
    for node in nodes:
        entry = _read_rule(node, problems)
        if entry is None:
            continue
        name = entry.fields.get("name")
        if name in seen:
            problems.append((entry.line, _("rule %(name)r is already defined on line %(line)d")
                             % {"name": name, "line": seen[name]}))
            continue
        if name is not None:
            seen[name] = entry.line
        rule = _validate_rule(entry, problems)
        if rule is not None:
            planned.append(rule)
            missing = [n for n in rule.unregistered_models() if n not in registered]
            if missing:
                warnings.append(_("line %(line)d: rule %(name)s: not in the registry: "
                                  "%(models)s") % {"line": entry.line, "name": name,
                                                   "models": ", ".join(missing)})
    return planned


def _read_rule(node: yaml.Node, problems: list[tuple[int, str]]) -> Entry | None:
    if not isinstance(node, yaml.MappingNode):
        problems.append((line_of(node), _("each rule must be a mapping (name: …, target: …)")))
        return None
    entry = Entry(line_of(node), {}, {})
    for key_node, value_node in node.value:
        key, line = scalar(key_node), line_of(key_node)
        if key not in RULE_KEYS:
            problems.append((line, _("unknown key %(key)r (allowed: %(allowed)s)")
                             % {"key": key, "allowed": ", ".join(RULE_KEYS)}))
            continue
        value = scalar(value_node)  # no $VAR expansion: a regex may end with $
        types = RULE_KEYS[key][0]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            problems.append((line, wrong_type(key, types, value)))
            continue
        entry.key_lines[key], entry.fields[key], entry.nodes[key] = line, value, value_node
    for required in ("name", "target"):
        if required not in entry.fields and not any(line == entry.line for line, _m in problems):
            problems.append((entry.line, _("missing required key %(key)r") % {"key": required}))
    return entry if {"name", "target"} <= set(entry.fields) else None


def _validate_rule(entry: Entry, problems: list[tuple[int, str]]) -> RoutingRule | None:
    data = entry.fields
    rule = RoutingRule.objects.filter(**{NAME_FIELD: data["name"]}).first() or RoutingRule()
    setattr(rule, NAME_FIELD, data["name"])
    rule.name = data["name"]
    setattr(rule, DESCRIPTION_FIELD, data.get("description", ""))
    rule.priority = data.get("priority", 100)
    rule.enabled = data.get("enabled", True)
    rule.condition = data.get("when", {})
    rule.target_model = data["target"]
    rule.fallbacks = data.get("fallbacks", [])
    before = len(problems)
    for path, message in condition_problems(rule.condition):
        line = line_of(node_at(entry.nodes["when"], path)) if "when" in entry.nodes else \
            entry.line
        problems.append((line, f"when: {path}: {message}"))
    try:
        rule.full_clean(exclude=["condition"])
    except ValidationError as exc:
        keys = {target: key for key, (_types, target) in RULE_KEYS.items()}
        for field_name, messages in exc.message_dict.items():
            key = keys.get(field_name.removesuffix(f"_{DEFAULT_LANGUAGE}"), "")
            problems.extend((entry.key_lines.get(key, entry.line), f"{key or 'rule'}: {m}")
                            for m in messages)
    return rule if len(problems) == before else None


def save_rule(rule: RoutingRule, report: ApplyReport, dry_run: bool) -> None:
    label = f"rule {getattr(rule, NAME_FIELD)}"
    if rule.pk is None:
        report.created.append(label)
    else:
        current = RoutingRule.objects.get(pk=rule.pk)
        if all(getattr(current, f) == getattr(rule, f) for f in RULE_COMPARED):
            report.unchanged.append(label)
            return
        report.updated.append(label)
    if not dry_run:
        rule.save()


def export_rule(rule: RoutingRule) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": getattr(rule, NAME_FIELD), "priority": rule.priority}
    if not rule.enabled:
        entry["enabled"] = False
    if rule.condition:
        entry["when"] = rule.condition
    entry["target"] = rule.target_model
    if rule.fallbacks:
        entry["fallbacks"] = list(rule.fallbacks)
    if getattr(rule, DESCRIPTION_FIELD):
        entry["description"] = getattr(rule, DESCRIPTION_FIELD)
    return entry
