"""The registry as a YAML file: ``openclaw config apply`` / ``export``.

The seed's format, applied unchanged::

    models:
      - name: cloud-32k
        type: remote
        endpoint: https://api.example.com/v1/chat
        auth: {type: api_key, key: $YOUR_API_KEY}
      - name: local-7b
        type: local
        path: /models/llama-7b
        engine: tensorrt_llm
        gpu_id: 0

A ``routing:`` list holds the routing rules (see ``routing.rules``)::

    routing:
      - name: Emergency
        priority: 10
        when: {field: model, op: eq, value: emergency}
        target: local-7b
      - name: Long context
        priority: 20
        when: {all: [{field: context_length, op: gt, value: 2048}]}
        target: cloud-32k
      - name: Default
        priority: 1000
        target: default-model          # no ``when``: always matches
        fallbacks: [fallback-model]

Rules are matched to existing ones by name (the default language's); ``when``
is a condition as stored in the admin, checked with the line of the bad part.
``$VAR`` is not expanded inside rules (a regex may end with ``$``). A target
that is not in the registry is a warning, not a refusal.

``type``/``engine`` map to an engine kind (see ``engine_kind``). ``$VAR`` and
``${VAR}`` are expanded from the environment (``$$`` is a literal ``$``).
Every problem is reported with its line; a file with any problem changes
nothing, models and rules alike. Model entries are matched to existing rows by
(name, endpoint, path): the same name at another endpoint is another instance
of the model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _
from modeltranslation.settings import DEFAULT_LANGUAGE
from modeltranslation.utils import build_localized_fieldname

from .models import LOCAL_ENGINES, EngineKind, ModelEndpoint, RoutingRule, condition_problems
from .services import model_folder_problems

VLLM_DEFAULT_URL = "http://127.0.0.1:8001/v1"  # where `vllm serve PATH --port 8001` listens
LOCAL_ENGINE_NAMES = {"vllm", "tensorrt_llm", "transformers", "onnx", "echo"}
REMOTE_ENGINE_NAMES = {"openai", "vllm"}
ENV_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*)|(\$))")

# key -> (python type(s), model field or None when handled specially)
MODEL_KEYS: dict[str, tuple[tuple[type, ...], str | None]] = {
    "name": ((str,), "name"),
    "type": ((str,), None),
    "engine": ((str,), None),
    "endpoint": ((str,), "endpoint_url"),
    "path": ((str,), "model_path"),
    "model": ((str,), "upstream_model"),
    "auth": ((dict,), None),
    "gpu_id": ((int,), "gpu_id"),
    "display_name": ((str,), "display_name"),
    "description": ((str,), "description"),
    "context_window": ((int,), "context_window"),
    "max_output_tokens": ((int,), "max_output_tokens"),
    "max_batch": ((int,), "max_batch"),
    "weight": ((int,), "weight"),
    "balancing": ((str,), "balancing"),  # weighted | least_busy | latency (full_clean checks)
    "warm": ((bool,), "warm"),
    "enabled": ((bool,), "enabled"),
    "params": ((dict,), "default_params"),
    "timeouts": ((dict,), None),
}
TIMEOUT_KEYS = {"connect": "connect_timeout", "first_byte": "first_byte_timeout",
                "total": "total_timeout"}
AUTH_TYPES = {"api_key", "bearer", "none"}
TOP_LEVEL_KEYS = {"models", "routing"}
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


class ConfigError(Exception):
    """The file was refused; ``problems`` lists (line, message), 1-based lines."""

    def __init__(self, source: str, problems: list[tuple[int, str]]):
        self.source = source
        self.problems = sorted(problems)
        super().__init__("\n".join(f"{source}:{line}: {msg}" for line, msg in self.problems))


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Entry:
    line: int
    key_lines: dict[str, int]
    fields: dict[str, Any]
    nodes: dict[str, yaml.Node] = field(default_factory=dict)


# --- parsing with line numbers ---------------------------------------------------


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _scalar(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _expand(value: Any, line: int, environ: Mapping[str, str],
            problems: list[tuple[int, str]]) -> Any:
    if isinstance(value, str):
        def substitute(match: re.Match) -> str:
            if match.group(3):
                return "$"
            name = match.group(1) or match.group(2)
            if name not in environ:
                problems.append((line, _("environment variable %(name)s is not set")
                                 % {"name": name}))
                return ""
            return environ[name]

        return ENV_RE.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _expand(v, line, environ, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, line, environ, problems) for v in value]
    return value


def _parse(text: str, source: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = _("not valid YAML: %(problem)s") % {"problem": getattr(exc, "problem", exc)}
        raise ConfigError(source, [(line, problem)]) from None


def _sections(root: yaml.Node | None,
              problems: list[tuple[int, str]]) -> dict[str, list[yaml.Node]]:
    if root is None:
        problems.append((1, _("the file is empty; expected a `models:` list")))
        return {}
    if not isinstance(root, yaml.MappingNode):
        problems.append((_line(root), _("expected a mapping with a `models:` list at the top")))
        return {}
    nodes: dict[str, list[yaml.Node]] = {key: [] for key in TOP_LEVEL_KEYS}
    for key_node, value_node in root.value:
        key = _scalar(key_node)
        if key not in TOP_LEVEL_KEYS:
            problems.append((_line(key_node), _("unknown top-level key %(key)r (allowed: "
                                                "%(allowed)s)") % {
                "key": key, "allowed": ", ".join(sorted(TOP_LEVEL_KEYS))}))
        elif not isinstance(value_node, yaml.SequenceNode):
            problems.append((_line(value_node), _("`%(key)s` must be a list") % {"key": key}))
        else:
            nodes[key].extend(value_node.value)
    return nodes


def _read_entry(node: yaml.Node, environ: Mapping[str, str],
                problems: list[tuple[int, str]]) -> _Entry | None:
    if not isinstance(node, yaml.MappingNode):
        problems.append((_line(node), _("each model must be a mapping (name: …, type: …)")))
        return None
    entry = _Entry(_line(node), {}, {})
    for key_node, value_node in node.value:
        key, line = _scalar(key_node), _line(key_node)
        if key not in MODEL_KEYS:
            problems.append((line, _("unknown key %(key)r (allowed: %(allowed)s)")
                             % {"key": key, "allowed": ", ".join(MODEL_KEYS)}))
            continue
        value = _expand(_scalar(value_node), line, environ, problems)
        types = MODEL_KEYS[key][0]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            problems.append((line, _wrong_type(key, types, value)))
            continue
        entry.key_lines[key] = line
        entry.fields[key] = value
    return entry


def _wrong_type(key: str, types: tuple[type, ...], value: Any) -> str:
    expected = {str: _("a string"), int: _("an integer"), bool: _("true or false"),
                dict: _("a mapping"), list: _("a list")}[types[0]]
    return _("%(key)s must be %(expected)s, not %(type)s") % {
        "key": key, "expected": expected, "type": type(value).__name__}


# --- mapping entries to rows -------------------------------------------------------


def engine_kind(kind_type: str, engine: str | None) -> str:
    """The seed's ``type``/``engine`` pair → an engine kind (``ValueError`` if invalid)."""
    if kind_type == "remote":
        engine = engine or "openai"
        if engine not in REMOTE_ENGINE_NAMES:
            raise ValueError(_("a remote model's engine must be one of %(allowed)s, not "
                               "%(engine)r") % {"allowed": ", ".join(sorted(REMOTE_ENGINE_NAMES)),
                                                "engine": engine})
        return engine
    if kind_type == "local":
        if engine not in LOCAL_ENGINE_NAMES:
            raise ValueError(_("a local model needs engine: one of %(allowed)s")
                             % {"allowed": ", ".join(sorted(LOCAL_ENGINE_NAMES))})
        return engine
    raise ValueError(_("type must be remote or local, not %(type)r") % {"type": kind_type})


def _row_fields(entry: _Entry, problems: list[tuple[int, str]]) -> dict[str, Any] | None:
    data = entry.fields
    for required in ("name", "type"):
        if required not in data:
            problems.append((entry.line, _("missing required key %(key)r") % {"key": required}))
    if "name" not in data or "type" not in data:
        return None
    try:
        kind = engine_kind(data["type"], data.get("engine"))
    except ValueError as exc:
        problems.append((entry.key_lines.get("engine", entry.key_lines["type"]), str(exc)))
        return None
    row = _defaults()
    row["engine"] = kind
    for key, value in data.items():
        target = MODEL_KEYS[key][1]
        if target:
            row[target] = value
    if kind == EngineKind.VLLM and data["type"] == "local":
        row["endpoint_url"] = row["endpoint_url"] or VLLM_DEFAULT_URL
        row["upstream_model"] = row["upstream_model"] or row["model_path"]
        row["model_path"] = ""  # the vLLM server loads it, not our workers
    if "auth" in data:
        row["api_key"] = _auth_key(data["auth"], entry.key_lines["auth"], problems)
    if "timeouts" in data:
        row.update(_timeouts(data["timeouts"], entry.key_lines["timeouts"], problems))
    return row


def _defaults() -> dict[str, Any]:
    editable = [f for f in ModelEndpoint._meta.concrete_fields
                if f.editable and not f.primary_key and not f.name.endswith(("_en", "_zh_hans"))]
    return {f.name: f.get_default() for f in editable}


def _auth_key(auth: dict, line: int, problems: list[tuple[int, str]]) -> str:
    unknown = set(auth) - {"type", "key"}
    if unknown:
        problems.append((line, _("unknown auth key(s): %(keys)s")
                         % {"keys": ", ".join(sorted(unknown))}))
    auth_type = auth.get("type", "api_key")
    if auth_type not in AUTH_TYPES:
        problems.append((line, _("auth.type must be one of %(allowed)s")
                         % {"allowed": ", ".join(sorted(AUTH_TYPES))}))
        return ""
    if auth_type == "none":
        return ""
    key = auth.get("key")
    if not isinstance(key, str) or not key:
        problems.append((line, _("auth.key must be a non-empty string (e.g. $YOUR_API_KEY)")))
        return ""
    return key


def _timeouts(spec: dict, line: int, problems: list[tuple[int, str]]) -> dict[str, float]:
    out = {}
    for key, value in spec.items():
        if key not in TIMEOUT_KEYS:
            problems.append((line, _("unknown timeout %(key)r (allowed: %(allowed)s)")
                             % {"key": key, "allowed": ", ".join(TIMEOUT_KEYS)}))
        elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            problems.append((line, _("timeouts.%(key)s must be a positive number of seconds")
                             % {"key": key}))
        else:
            out[TIMEOUT_KEYS[key]] = float(value)
    return out


def _validate(row: dict[str, Any], entry: _Entry, problems: list[tuple[int, str]],
              warnings: list[str]) -> ModelEndpoint:
    instance = ModelEndpoint.objects.filter(
        name=row["name"], endpoint_url=row["endpoint_url"], model_path=row["model_path"]).first()
    instance = instance or ModelEndpoint()
    for name, value in row.items():
        setattr(instance, name, value)
    try:
        instance.full_clean(validate_unique=False)
    except ValidationError as exc:
        for field_name, messages in exc.message_dict.items():
            line = entry.key_lines.get(_yaml_key(field_name), entry.line)
            label = _yaml_key(field_name) or "model"
            problems.extend((line, f"{label}: {message}") for message in messages)
    if instance.engine in LOCAL_ENGINES and instance.model_path:
        for problem in model_folder_problems(instance.model_path, instance.engine):
            warnings.append(_("line %(line)d: %(name)s: %(problem)s (checked again by the "
                              "worker that loads it)") % {"line": entry.line,
                                                          "name": instance.name,
                                                          "problem": problem})
    return instance


def _yaml_key(field_name: str) -> str | None:
    for key, (_types, target) in MODEL_KEYS.items():
        if target == field_name:
            return key
    if field_name in TIMEOUT_KEYS.values():
        return "timeouts"
    return {"engine": "engine", "api_key": "auth"}.get(field_name)


# --- apply / export -------------------------------------------------------------------


def apply_config(text: str, *, source: str = "<config>",
                 environ: Mapping[str, str] | None = None,
                 dry_run: bool = False) -> ApplyReport:
    """Create or update the registry from YAML; all of it or, on any problem, none."""
    environ = os.environ if environ is None else environ
    problems: list[tuple[int, str]] = []
    report = ApplyReport()
    planned: list[tuple[ModelEndpoint, _Entry]] = []
    seen: dict[tuple[str, str, str], int] = {}
    sections = _sections(_parse(text, source), problems)
    for node in sections.get("models", []):
        entry = _read_entry(node, environ, problems)
        row = _row_fields(entry, problems) if entry else None
        if row is None:
            continue
        identity = (row["name"], row["endpoint_url"], row["model_path"])
        if identity in seen:
            problems.append((entry.line, _("model %(name)r at the same endpoint/path is "
                                           "already defined on line %(line)d")
                             % {"name": row["name"], "line": seen[identity]}))
            continue
        seen[identity] = entry.line
        planned.append((_validate(row, entry, problems, report.warnings), entry))
    registered = {instance.name for instance, _entry in planned}
    planned_rules = _plan_rules(sections.get("routing", []), registered, problems,
                                report.warnings)
    if problems:
        raise ConfigError(source, problems)
    with transaction.atomic():
        for instance, _entry in planned:
            _save(instance, report, dry_run)
        for rule in planned_rules:
            _save_rule(rule, report, dry_run)
        if dry_run:
            transaction.set_rollback(True)
    return report


def _save(instance: ModelEndpoint, report: ApplyReport, dry_run: bool) -> None:
    label = f"{instance.name} ({instance.location or instance.engine})"
    if instance.pk is None:
        report.created.append(label)
    elif _changed(instance):
        report.updated.append(label)
    else:
        report.unchanged.append(label)
        return
    if not dry_run:
        instance.save()


def _changed(instance: ModelEndpoint) -> bool:
    current = ModelEndpoint.objects.get(pk=instance.pk)
    return any(getattr(current, name) != getattr(instance, name) for name in _defaults())


def secret_env_name(model_name: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", model_name.upper()).strip("_") + "_API_KEY"


def export_config() -> str:
    """The registry as YAML that ``apply`` accepts; secrets become ``${NAME_API_KEY}``."""
    defaults = _defaults()
    models = [_export_entry(endpoint, defaults) for endpoint in ModelEndpoint.objects.all()]
    document: dict[str, Any] = {"models": models}
    routing = [_export_rule(rule) for rule in RoutingRule.objects.order_by("priority", "id")]
    if routing:
        document["routing"] = routing
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def _export_entry(endpoint: ModelEndpoint, defaults: dict[str, Any]) -> dict[str, Any]:
    local = endpoint.engine in LOCAL_ENGINES or endpoint.engine == EngineKind.ECHO
    entry: dict[str, Any] = {"name": endpoint.name, "type": "local" if local else "remote",
                             "engine": endpoint.engine}
    for key, (_types, target) in MODEL_KEYS.items():
        if target and key != "name":
            value = getattr(endpoint, target)
            if value != defaults.get(target) and value not in ("", None):
                entry[key] = value
    if endpoint.api_key:
        entry["auth"] = {"type": "api_key", "key": "${" + secret_env_name(endpoint.name) + "}"}
    timeouts = {key: getattr(endpoint, target) for key, target in TIMEOUT_KEYS.items()
                if getattr(endpoint, target) != defaults[target]}
    if timeouts:
        entry["timeouts"] = timeouts
    return entry


# --- routing rules ------------------------------------------------------------------------

NAME_FIELD = build_localized_fieldname("name", DEFAULT_LANGUAGE)
DESCRIPTION_FIELD = build_localized_fieldname("description", DEFAULT_LANGUAGE)
RULE_COMPARED = (NAME_FIELD, DESCRIPTION_FIELD, "priority", "enabled", "condition",
                 "target_model", "fallbacks")


def _plan_rules(nodes: list[yaml.Node], registered: set[str],
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


def _read_rule(node: yaml.Node, problems: list[tuple[int, str]]) -> _Entry | None:
    if not isinstance(node, yaml.MappingNode):
        problems.append((_line(node), _("each rule must be a mapping (name: …, target: …)")))
        return None
    entry = _Entry(_line(node), {}, {})
    for key_node, value_node in node.value:
        key, line = _scalar(key_node), _line(key_node)
        if key not in RULE_KEYS:
            problems.append((line, _("unknown key %(key)r (allowed: %(allowed)s)")
                             % {"key": key, "allowed": ", ".join(RULE_KEYS)}))
            continue
        value = _scalar(value_node)  # no $VAR expansion: a regex may end with $
        types = RULE_KEYS[key][0]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            problems.append((line, _wrong_type(key, types, value)))
            continue
        entry.key_lines[key], entry.fields[key], entry.nodes[key] = line, value, value_node
    for required in ("name", "target"):
        if required not in entry.fields and not any(line == entry.line for line, _m in problems):
            problems.append((entry.line, _("missing required key %(key)r") % {"key": required}))
    return entry if {"name", "target"} <= set(entry.fields) else None


def _validate_rule(entry: _Entry, problems: list[tuple[int, str]]) -> RoutingRule | None:
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
        line = _line(_node_at(entry.nodes["when"], path)) if "when" in entry.nodes else \
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


PATH_TOKEN = re.compile(r"([A-Za-z_]+)|\[(\d+)\]")


def _node_at(node: yaml.Node, path: str) -> yaml.Node:
    """The YAML node a condition path (``all[1].value``) points at, or its deepest parent."""
    for name, index in PATH_TOKEN.findall(path if path != "condition" else ""):
        if name and isinstance(node, yaml.MappingNode):
            found = [v for k, v in node.value if _scalar(k) == name]
            if not found:
                return node
            node = found[0]
        elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
        else:
            return node
    return node


def _save_rule(rule: RoutingRule, report: ApplyReport, dry_run: bool) -> None:
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


def _export_rule(rule: RoutingRule) -> dict[str, Any]:
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
