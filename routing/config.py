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
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from inference.kinds import LOCAL_ENGINES, EngineKind

from .config_rules import export_rule, plan_rules, save_rule
from .config_source import (
    ApplyReport,
    ConfigError,
    Entry,
    expand,
    line_of,
    parse,
    scalar,
    sections,
    wrong_type,
)
from .models import ModelEndpoint, RoutingRule
from .services import model_folder_problems

VLLM_DEFAULT_URL = "http://127.0.0.1:8001/v1"  # where `vllm serve PATH --port 8001` listens
LOCAL_ENGINE_NAMES = {"vllm", "tensorrt_llm", "transformers", "onnx", "echo"}
REMOTE_ENGINE_NAMES = {"openai", "vllm"}

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
    "tool_format": ((str,), "tool_format"),  # hermes | llama3_json (full_clean checks)
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


def _read_entry(node: yaml.Node, environ: Mapping[str, str],
                problems: list[tuple[int, str]]) -> Entry | None:
    if not isinstance(node, yaml.MappingNode):
        problems.append((line_of(node), _("each model must be a mapping (name: …, type: …)")))
        return None
    entry = Entry(line_of(node), {}, {})
    for key_node, value_node in node.value:
        key, line = scalar(key_node), line_of(key_node)
        if key not in MODEL_KEYS:
            problems.append((line, _("unknown key %(key)r (allowed: %(allowed)s)")
                             % {"key": key, "allowed": ", ".join(MODEL_KEYS)}))
            continue
        value = expand(scalar(value_node), line, environ, problems)
        types = MODEL_KEYS[key][0]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            problems.append((line, wrong_type(key, types, value)))
            continue
        entry.key_lines[key] = line
        entry.fields[key] = value
    return entry


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


def _row_fields(entry: Entry, problems: list[tuple[int, str]]) -> dict[str, Any] | None:
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


def _validate(row: dict[str, Any], entry: Entry, problems: list[tuple[int, str]],
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
            key = _yaml_key(field_name)
            line = entry.key_lines.get(key, entry.line) if key is not None else entry.line
            label = key or "model"
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
    planned: list[tuple[ModelEndpoint, Entry]] = []
    seen: dict[tuple[str, str, str], int] = {}
    found = sections(parse(text, source), problems)
    for node in found.get("models", []):
        entry = _read_entry(node, environ, problems)
        if entry is None:
            continue
        row = _row_fields(entry, problems)
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
    planned_rules = plan_rules(found.get("routing", []), registered, problems,
                               report.warnings)
    if problems:
        raise ConfigError(source, problems)
    with transaction.atomic():
        for instance, _entry in planned:
            _save(instance, report, dry_run)
        for rule in planned_rules:
            save_rule(rule, report, dry_run)
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
    routing = [export_rule(rule) for rule in RoutingRule.objects.order_by("priority", "id")]
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


