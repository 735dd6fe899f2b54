"""The model registry (every model instance OpenClaw can send a request to) and
the routing rules that choose among them (conditions are data, never code)."""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from core.fields import EncryptedTextField
from inference.kinds import HTTP_ENGINES, LOCAL_ENGINES, EngineKind, ToolFormat

from .key_models import ApiKey  # noqa: F401 - defined in its own module, an app model here
from .quota_models import Quota  # noqa: F401 - likewise
from .usage_models import AuditEvent, UsageRecord  # noqa: F401 - likewise

if TYPE_CHECKING:
    # routing/translation.py has modeltranslation swap its MultilingualManager in for
    # ``objects``; django-stubs' plugin resolves it only once mypy has read the module.
    import modeltranslation.manager  # noqa: F401

MODEL_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"


class HealthState(models.TextChoices):
    UNKNOWN = "unknown", _("Unknown")
    HEALTHY = "healthy", _("Healthy")
    UNHEALTHY = "unhealthy", _("Unhealthy")


class Balancing(models.TextChoices):
    """How a request picks among the healthy instances of one model name."""

    WEIGHTED = "weighted", _("Weighted random")
    LEAST_BUSY = "least_busy", _("Least busy (fewest requests in flight)")
    LATENCY = "latency", _("Lowest latency (recent time to first token)")


# Default parameters an endpoint may carry — sampling values sent with each
# request, and engine options — with their type and allowed range.
SAMPLING_PARAMS: dict[str, tuple[type, float | None, float | None]] = {
    "temperature": (float, 0.0, 2.0),
    "top_p": (float, 0.0, 1.0),
    "top_k": (int, 0, None),
    "max_tokens": (int, 1, None),
    "presence_penalty": (float, -2.0, 2.0),
    "frequency_penalty": (float, -2.0, 2.0),
    "repetition_penalty": (float, 0.0, None),
    "seed": (int, None, None),
    "stop": (list, None, None),
    "delay_ms": (float, 0.0, 10000.0),  # echo: pause between words
    "batching": (bool, None, None),  # transformers: dynamic batching on/off
    "batch_wait_ms": (float, 0.0, 1000.0),  # transformers: window to gather a batch
    "torch_threads": (int, 1, 256),  # transformers: torch intra-op threads
    "dtype": (str, None, None),  # transformers: "auto", "float16", "bfloat16", …
    "llm_args": (dict, None, None),  # tensorrt_llm: extra LLM(...) arguments
}


def validate_sampling_params(params: Any) -> None:
    """Raise ``ValidationError`` naming each bad key of a default-params mapping."""
    if not isinstance(params, dict):
        raise ValidationError(_("Default parameters must be a JSON object."))
    errors = []
    for key, value in params.items():
        if key not in SAMPLING_PARAMS:
            errors.append(_("Unknown parameter “%(key)s” (allowed: %(allowed)s).")
                          % {"key": key, "allowed": ", ".join(SAMPLING_PARAMS)})
            continue
        kind, low, high = SAMPLING_PARAMS[key]
        if kind is list:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        elif kind in (bool, str, dict):
            ok = isinstance(value, kind)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and kind in (int, float):
            ok = (low is None or value >= low) and (high is None or value <= high)
        if not ok:
            errors.append(_("“%(key)s” must be %(rule)s.")
                          % {"key": key, "rule": _describe(kind, low, high)})
    if errors:
        raise ValidationError(errors)


def validate_endpoint_url(value: str) -> None:
    """http(s) with a host; single-label hosts (``vllm``, ``gpu-box``) are fine."""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname or any(
            c.isspace() for c in value):
        raise ValidationError(_("Enter an http:// or https:// URL with a host, e.g. "
                                "http://vllm:8000/v1."))
    try:
        parts.port  # noqa: B018 - raises on a non-numeric port
    except ValueError:
        raise ValidationError(_("The URL's port is not a number.")) from None


def _describe(kind: type, low: float | None, high: float | None) -> str:
    if kind is list:
        return str(_("a list of strings"))
    if kind in (bool, str, dict):
        return str({bool: _("true or false"), str: _("a string"), dict: _("an object")}[kind])
    name = str(_("an integer")) if kind is int else str(_("a number"))
    if low is not None and high is not None:
        return f"{name} {low}–{high}"
    if low is not None:
        return f"{name} ≥ {low}"
    return name


class ModelEndpoint(models.Model):
    """One instance of a model: where it runs and how to reach it.

    Several rows may share ``name`` (instances of one model, balanced by
    ``weight``). Credentials are stored AES-256-GCM encrypted.
    """

    name = models.CharField(
        _("model name"), max_length=128, db_index=True,
        validators=[RegexValidator(MODEL_NAME_RE, _("Letters, digits and . _ : / @ + - only."))],
        help_text=_("The model id clients ask for; several instances may share it."))
    display_name = models.CharField(_("display name"), max_length=200, blank=True)
    description = models.TextField(_("description"), blank=True)
    engine = models.CharField(_("engine"), max_length=32, choices=EngineKind.choices,
                              default=EngineKind.OPENAI)
    endpoint_url = models.CharField(
        _("endpoint URL"), max_length=500, blank=True, validators=[validate_endpoint_url],
        help_text=_("Base URL (…/v1) or the full chat path (…/v1/chat/completions)."))
    model_path = models.CharField(
        _("local path"), max_length=500, blank=True,
        help_text=_("Model folder for local engines (transformers, ONNX, TensorRT-LLM)."))
    upstream_model = models.CharField(
        _("upstream model id"), max_length=200, blank=True,
        help_text=_("Model id sent to the backend; empty sends the model name."))
    api_key = EncryptedTextField(_("API key"), blank=True)
    context_window = models.PositiveIntegerField(_("context window (tokens)"), default=4096,
                                                 validators=[MinValueValidator(16)])
    max_output_tokens = models.PositiveIntegerField(_("max output tokens"), default=1024,
                                                    validators=[MinValueValidator(1)])
    gpu_id = models.PositiveSmallIntegerField(_("GPU id"), null=True, blank=True)
    tool_format = models.CharField(
        _("tool call format"), max_length=32, choices=ToolFormat.choices, blank=True,
        default=ToolFormat.NONE,
        help_text=_("Local engines: how tools are written into the prompt when the model's "
                    "own chat template has no tool support, and how tool calls are read out "
                    "of the text it generates. Pick the format the model was trained on; "
                    "empty refuses requests with tools."))
    weight = models.PositiveIntegerField(
        _("weight"), default=1, help_text=_("Share of traffic among instances; 0 drains."))
    balancing = models.CharField(
        _("balancing"), max_length=16, choices=Balancing.choices, default=Balancing.WEIGHTED,
        help_text=_("How requests pick among the instances of this model name; the first "
                    "instance's (lowest id) choice applies to all of them."))
    max_batch = models.PositiveSmallIntegerField(_("max batch"), default=8,
                                                 validators=[MinValueValidator(1)])
    enabled = models.BooleanField(_("enabled"), default=True)
    warm = models.BooleanField(_("warm up"), default=False,
                               help_text=_("Load at worker start instead of on first use."))
    default_params = models.JSONField(_("default parameters"), default=dict, blank=True,
                                      validators=[validate_sampling_params])
    connect_timeout = models.FloatField(_("connect timeout (s)"), default=5.0,
                                        validators=[MinValueValidator(0.1)])
    # A third of the default request deadline (routing.attempts.DEFAULT_DEADLINE_S): a
    # hanging instance is given up in time for a fallback to answer.
    first_byte_timeout = models.FloatField(
        _("first byte timeout (s)"), default=20.0, validators=[MinValueValidator(0.1)],
        help_text=_("Longest wait for the answer to start (a non-streamed answer from an "
                    "HTTP server starts when it is whole); kept below the request "
                    "deadline so that a fallback can still answer."))
    total_timeout = models.FloatField(_("total timeout (s)"), default=300.0,
                                      validators=[MinValueValidator(0.1)])
    health = models.CharField(_("health"), max_length=16, choices=HealthState.choices,
                              default=HealthState.UNKNOWN, editable=False)
    health_detail = models.CharField(_("health detail"), max_length=500, blank=True,
                                     editable=False)
    health_checked_at = models.DateTimeField(_("health checked at"), null=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        verbose_name = _("model endpoint")
        verbose_name_plural = _("model endpoints")
        constraints = [
            models.UniqueConstraint(fields=["name", "endpoint_url", "model_path"],
                                    name="unique_model_instance"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.location or self.engine})"

    def runs_here(self) -> bool:
        """Whether a prompt sent to this instance stays on infrastructure the operator
        runs (what hybrid mode requires of requests with sensitive data): an in-house
        engine (TensorRT-LLM, transformers, ONNX, echo, embeddings), or an
        OpenAI-compatible server at a loopback, private or link-local address or at a
        single-label host name (a container or cluster service, e.g. ``vllm``). A
        public host name is a cloud API, never local."""
        if self.engine not in HTTP_ENGINES:
            return True
        host = urlsplit(self.endpoint_url or "").hostname or ""
        if not host:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host == "localhost" or "." not in host
        return address.is_loopback or address.is_private or address.is_link_local

    @property
    def location(self) -> str:
        return self.endpoint_url or self.model_path

    def clean(self) -> None:
        """Rules that span fields; reachability and paths are checked by ``services``."""
        errors: dict[str, list] = {}
        if self.engine in HTTP_ENGINES and not self.endpoint_url:
            errors.setdefault("endpoint_url", []).append(
                _("An %(engine)s endpoint needs its URL.") % {"engine": self.engine})
        if self.engine in LOCAL_ENGINES and not self.model_path:
            errors.setdefault("model_path", []).append(
                _("A %(engine)s endpoint needs the model folder.") % {"engine": self.engine})
        if self.engine == EngineKind.TENSORRT_LLM and self.gpu_id is None:
            errors.setdefault("gpu_id", []).append(
                _("TensorRT-LLM runs on a GPU: give its id (0 for the first)."))
        if self.first_byte_timeout > self.total_timeout:
            errors.setdefault("first_byte_timeout", []).append(
                _("Must not exceed the total timeout."))
        if errors:
            raise ValidationError(errors)

    @property
    def masked_api_key(self) -> str:
        key = self.api_key or ""
        if not key:
            return ""
        return f"{key[:3]}…{key[-4:]}" if len(key) > 10 else "…" * 3


# --- routing rules -------------------------------------------------------------------
#
# A condition is data, never code: a leaf {"field", "op", "value"}, or
# {"all": [...]}, {"any": [...]}, {"not": cond}, or {} (always true).

STR_OPS = ("eq", "ne", "in", "not_in", "contains", "icontains", "startswith", "regex")
NUM_OPS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte")
SET_OPS = ("eq", "ne", "in", "not_in")  # membership: eq = has it, in = has any of them

# field -> (kind, allowed ops); kinds: "str", "int", "set"
CONDITION_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "model": ("str", STR_OPS),
    "context_length": ("int", NUM_OPS),
    "content": ("str", STR_OPS),
    "api_key": ("str", STR_OPS),
    "user": ("str", STR_OPS),
    "group": ("set", SET_OPS),
    "language": ("str", STR_OPS),
    "flag": ("set", SET_OPS),
}
MAX_REGEX_LENGTH = 200
MAX_CONDITION_DEPTH = 16
LEAF_KEYS = {"field", "op", "value"}
GROUP_KEYS = {"all", "any", "not"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def condition_problems(condition: Any, path: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """Every problem of a condition as (path, message); the path is ``all[1].value`` style."""
    where = path or "condition"
    if depth > MAX_CONDITION_DEPTH:
        return [(where, str(_("Conditions nest at most %(n)d deep.")
                            % {"n": MAX_CONDITION_DEPTH}))]
    if not isinstance(condition, dict):
        return [(where, str(_("Must be a JSON object.")))]
    if not condition:
        return []
    keys = set(condition)
    if keys & GROUP_KEYS:
        if len(keys) != 1 or keys & LEAF_KEYS:
            return [(where, str(_("Use exactly one of “all”, “any”, “not” in an object.")))]
        key = keys.pop()
        sub = f"{path}.{key}" if path else key
        if key == "not":
            if condition[key] == {}:
                return [(sub, str(_("“not” needs a non-empty condition.")))]
            return condition_problems(condition[key], sub, depth + 1)
        items = condition[key]
        if not isinstance(items, list) or not items:
            return [(sub, str(_("Must be a non-empty list of conditions.")))]
        problems = []
        for index, item in enumerate(items):
            problems += condition_problems(item, f"{sub}[{index}]", depth + 1)
        return problems
    return _leaf_problems(condition, path)


def _leaf_problems(leaf: dict, path: str) -> list[tuple[str, str]]:
    def at(key: str) -> str:
        return f"{path}.{key}" if path else key

    unknown = sorted(set(leaf) - LEAF_KEYS)
    if unknown:
        return [(at(unknown[0]), str(_("Unknown key “%(key)s” (allowed: field, op, value, or "
                                       "all / any / not).") % {"key": unknown[0]}))]
    missing = sorted(LEAF_KEYS - set(leaf))
    if missing:
        return [(at(missing[0]), str(_("Missing “%(key)s”.") % {"key": missing[0]}))]
    field, op, value = leaf["field"], leaf["op"], leaf["value"]
    if field not in CONDITION_FIELDS:
        return [(at("field"), str(_("Unknown field “%(field)s” (allowed: %(allowed)s).")
                                  % {"field": field, "allowed": ", ".join(CONDITION_FIELDS)}))]
    kind, ops = CONDITION_FIELDS[field]
    if op not in ops:
        return [(at("op"), str(_("Operator “%(op)s” does not apply to %(field)s (allowed: "
                                 "%(allowed)s).") % {"op": op, "field": field,
                                                     "allowed": ", ".join(ops)}))]
    message = _value_problem(kind, op, value)
    return [(at("value"), message)] if message else []


def _value_problem(kind: str, op: str, value: Any) -> str | None:
    one = _is_int if kind == "int" else (lambda v: isinstance(v, str))
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or not all(one(v) for v in value):
            return str(_("Must be a non-empty list of integers.") if kind == "int"
                       else _("Must be a non-empty list of strings."))
        return None
    if not one(value):
        return str(_("Must be an integer.") if kind == "int" else _("Must be a string."))
    if op == "regex":
        if len(value) > MAX_REGEX_LENGTH:
            return str(_("The pattern is longer than %(n)d characters.")
                       % {"n": MAX_REGEX_LENGTH})
        try:
            re.compile(value)
        except re.error as exc:
            return str(_("“%(pattern)s” is not a valid regular expression: %(error)s")
                       % {"pattern": value, "error": exc})
    return None


def validate_condition(condition: Any) -> None:
    """Raise ``ValidationError`` with one message per problem, each naming its path."""
    problems = condition_problems(condition)
    if problems:
        raise ValidationError([
            ValidationError("%(path)s: %(message)s", params={"path": p, "message": m})
            for p, m in problems])


def validate_model_names(value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValidationError(_("Must be a JSON list of model names."))
    bad = [v for v in value if not re.match(MODEL_NAME_RE, v)]
    if bad:
        raise ValidationError(_("Not a valid model name: %(names)s") % {"names": ", ".join(bad)})


class RoutingRule(models.Model):
    """Where a request goes: the first enabled rule (lowest priority first) whose
    condition matches sends it to ``target_model``, then down ``fallbacks``.

    The lowest-priority rule with an empty condition is the catch-all; its
    fallbacks are the global last resort appended to every chain.
    """

    name = models.CharField(_("name"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    priority = models.IntegerField(_("priority"), default=100, db_index=True,
                                   help_text=_("Lower numbers are tried first."))
    enabled = models.BooleanField(_("enabled"), default=True)
    condition = models.JSONField(
        _("condition"), default=dict, blank=True, validators=[validate_condition],
        help_text=_('{"field": "model", "op": "eq", "value": "emergency"}; '
                    '{"all": [...]}, {"any": [...]}, {"not": {...}}; {} matches everything.'))
    target_model = models.CharField(
        _("target model"), max_length=128,
        validators=[RegexValidator(MODEL_NAME_RE, _("Letters, digits and . _ : / @ + - only."))])
    fallbacks = models.JSONField(_("fallbacks"), default=list, blank=True,
                                 validators=[validate_model_names],
                                 help_text=_("Model names tried in order if the target fails."))
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "id"]
        verbose_name = _("routing rule")
        verbose_name_plural = _("routing rules")

    def __str__(self) -> str:
        return f"{self.priority}: {self.name}"

    def clean(self) -> None:
        if self.fallbacks and self.target_model in self.fallbacks:
            raise ValidationError({"fallbacks": _("The target model is already tried first; "
                                                  "do not repeat it as a fallback.")})

    def unregistered_models(self) -> list[str]:
        """Target/fallback names with no endpoint in the registry (a warning, not an error)."""
        names = [self.target_model, *(self.fallbacks or [])]
        known = set(ModelEndpoint.objects.filter(name__in=names).values_list("name", flat=True))
        return [n for n in dict.fromkeys(names) if n and n not in known]
