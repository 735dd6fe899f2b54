"""Services of the model registry: snapshots for engines, checks that explain
themselves, the one-token connection test, health bookkeeping."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from inference.engines.base import ChatRequest, EndpointConfig
from inference.errors import EngineError
from inference.kinds import EngineKind, can_chat
from inference.registry import build_engine

from .models import HealthState, ModelEndpoint

PROBE_TEXT = "OpenClaw checks this model."

WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.gguf")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


def endpoint_config(endpoint: ModelEndpoint) -> EndpointConfig:
    """The plain snapshot engines work from (they never see the ORM)."""
    return EndpointConfig(
        id=endpoint.pk, name=endpoint.name, engine=endpoint.engine,
        url=endpoint.endpoint_url, path=endpoint.model_path,
        upstream_model=endpoint.upstream_model, api_key=endpoint.api_key or "",
        context_window=endpoint.context_window, max_output_tokens=endpoint.max_output_tokens,
        gpu_id=endpoint.gpu_id, max_batch=endpoint.max_batch,
        params=dict(endpoint.default_params or {}), tool_format=endpoint.tool_format,
        connect_timeout=endpoint.connect_timeout,
        first_byte_timeout=endpoint.first_byte_timeout, total_timeout=endpoint.total_timeout,
    )


def model_folder_problems(path: str, engine: str) -> list[str]:
    """What is missing from a local model folder for ``engine`` (empty when fine)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return [_("folder %(path)s does not exist on this machine") % {"path": folder}]
    problems = []
    if engine == EngineKind.ONNX:
        if not any(folder.rglob("*.onnx")):
            problems.append(_("no .onnx file in %(path)s") % {"path": folder})
    elif engine == EngineKind.TENSORRT_LLM:
        engines = any(folder.glob("*.engine"))
        checkpoint = any(folder.glob(pattern) for pattern in WEIGHT_FILES)
        if not (engines or checkpoint):
            problems.append(_("no TensorRT engine (*.engine) or checkpoint weights in %(path)s")
                            % {"path": folder})
    elif not any(any(folder.glob(pattern)) for pattern in WEIGHT_FILES):
        problems.append(_("no weights (*.safetensors, *.bin) in %(path)s") % {"path": folder})
    if not (folder / "config.json").exists() and engine != EngineKind.TENSORRT_LLM:
        problems.append(_("no config.json in %(path)s") % {"path": folder})
    if engine in {EngineKind.TRANSFORMERS, EngineKind.ONNX} and not any(
            (folder / name).exists() for name in TOKENIZER_FILES):
        problems.append(_("no tokenizer files in %(path)s") % {"path": folder})
    return problems


def url_unreachable(url: str, timeout: float = 2.0) -> str | None:
    """Why ``url``'s host cannot be reached over TCP, or None when it can."""
    parts = urlsplit(url)
    if not parts.hostname:
        return _("URL has no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return _("cannot connect to %(host)s:%(port)s (%(reason)s)") % {
            "host": parts.hostname, "port": port, "reason": exc.strerror or exc}


@dataclass
class ConnectionCheck:
    ok: bool
    detail: str
    latency_ms: float


async def check_connection(endpoint: ModelEndpoint) -> ConnectionCheck:
    """The call the endpoint's kind supports, through its engine — a one-token
    generation for a chat model, one short text embedded for an embedding model (loading
    the model first if this process has not) — and records its health."""
    started = time.perf_counter()
    engine = None
    try:
        engine = build_engine(endpoint_config(endpoint))
        if can_chat(endpoint.engine):
            completion = await engine.generate(ChatRequest(
                messages=[{"role": "user", "content": "Say OK."}], max_tokens=1))
            ok, detail = True, _("answered %(text)r") % {"text": completion.text[:40]}
        else:
            vectors = (await engine.embed([PROBE_TEXT])).vectors
            ok, detail = True, _("a vector of %(dimensions)d dimensions") % {
                "dimensions": len(vectors[0])}
    except EngineError as exc:
        ok, detail = False, f"{exc.code}: {exc.message}"
    except Exception as exc:  # a model that will not load: reported, not raised
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    finally:
        if engine is not None:
            await engine.aclose()
    result = ConnectionCheck(ok, detail, (time.perf_counter() - started) * 1000)
    await sync_to_async(record_health)(
        endpoint.pk, HealthState.HEALTHY if result.ok else HealthState.UNHEALTHY, result.detail)
    return result


def record_health(endpoint_id: int, state: str, detail: str = "",
                  only_if_changed: bool = False) -> None:
    """Set an endpoint's health; ``only_if_changed`` skips the write when already so
    (the hot path records every success that way)."""
    rows = ModelEndpoint.objects.filter(pk=endpoint_id)
    if only_if_changed:
        rows = rows.exclude(health=state)
    rows.update(health=state, health_detail=detail[:500], health_checked_at=timezone.now())


def record_worker_outcome(endpoint_id: int, ok: bool, detail: str) -> None:
    """A call run on a worker ended (``inference.remote``): healthy on success (written
    only when it was not), unhealthy with the reason otherwise."""
    state = HealthState.HEALTHY if ok else HealthState.UNHEALTHY
    record_health(endpoint_id, state, detail, only_if_changed=ok)


def set_enabled(endpoints: Iterable[ModelEndpoint], enabled: bool) -> int:
    """Enable or disable endpoints one by one (``save`` fires the change signals)."""
    count = 0
    with transaction.atomic():
        for endpoint in endpoints:
            if endpoint.enabled != enabled:
                endpoint.enabled = enabled
                endpoint.save(update_fields=["enabled", "updated_at"])
                count += 1
    return count
