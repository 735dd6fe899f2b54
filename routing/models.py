"""The model registry: every model instance OpenClaw can send a request to."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from openclaw_site.fields import EncryptedTextField

MODEL_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"


class EngineKind(models.TextChoices):
    OPENAI = "openai", _("OpenAI-compatible HTTP (cloud, trtllm-serve, llama.cpp, Ollama)")
    VLLM = "vllm", _("vLLM server (OpenAI-compatible HTTP)")
    TENSORRT_LLM = "tensorrt_llm", _("TensorRT-LLM (GPU worker)")
    TRANSFORMERS = "transformers", _("Hugging Face transformers (CPU/GPU worker)")
    ONNX = "onnx", _("ONNX Runtime (CPU/GPU worker)")
    ECHO = "echo", _("Echo (wiring check: repeats the input)")


HTTP_ENGINES = {EngineKind.OPENAI, EngineKind.VLLM}
LOCAL_ENGINES = {EngineKind.TENSORRT_LLM, EngineKind.TRANSFORMERS, EngineKind.ONNX}


class HealthState(models.TextChoices):
    UNKNOWN = "unknown", _("Unknown")
    HEALTHY = "healthy", _("Healthy")
    UNHEALTHY = "unhealthy", _("Unhealthy")


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
    weight = models.PositiveIntegerField(
        _("weight"), default=1, help_text=_("Share of traffic among instances; 0 drains."))
    max_batch = models.PositiveSmallIntegerField(_("max batch"), default=8,
                                                 validators=[MinValueValidator(1)])
    enabled = models.BooleanField(_("enabled"), default=True)
    warm = models.BooleanField(_("warm up"), default=False,
                               help_text=_("Load at worker start instead of on first use."))
    default_params = models.JSONField(_("default parameters"), default=dict, blank=True,
                                      validators=[validate_sampling_params])
    connect_timeout = models.FloatField(_("connect timeout (s)"), default=5.0,
                                        validators=[MinValueValidator(0.1)])
    first_byte_timeout = models.FloatField(_("first byte timeout (s)"), default=60.0,
                                           validators=[MinValueValidator(0.1)])
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
