"""The engine registry: ``@register_engine("openai")`` on a class, filled at
start-up when ``InferenceConfig.ready()`` imports the engine modules.

An engine registered with ``runs_in="worker"`` (local models: transformers,
ONNX, TensorRT-LLM) is never built in the calling process: ``build_engine``
returns a :class:`~inference.remote.WorkerEngine` that runs the request on a
Celery worker and streams the deltas back; the worker's engine pool builds
the real class with :func:`build_local_engine`.
"""

from __future__ import annotations

from collections.abc import Callable

from django.utils.translation import gettext as _

from .engines.base import EndpointConfig, Engine
from .errors import EngineUnavailable
from .remote import WorkerEngine

_engines: dict[str, type[Engine]] = {}


def register_engine(*kinds: str, runs_in: str = "caller") -> Callable[[type[Engine]], type[Engine]]:
    if runs_in not in {"caller", "worker"}:
        raise ValueError("runs_in must be 'caller' or 'worker'")

    def decorator(cls: type[Engine]) -> type[Engine]:
        cls.runs_in = runs_in
        for kind in kinds:
            if kind in _engines and _engines[kind] is not cls:
                raise ValueError(f"engine kind {kind!r} is already registered "
                                 f"by {_engines[kind].__qualname__}")
            _engines[kind] = cls
        cls.kind = cls.kind or kinds[0]
        return cls

    return decorator


def registered_kinds() -> list[str]:
    return sorted(_engines)


def engine_class(kind: str) -> type[Engine]:
    try:
        return _engines[kind]
    except KeyError:
        raise EngineUnavailable(
            _("no engine for kind “%(kind)s” in this process (registered: %(kinds)s)")
            % {"kind": kind, "kinds": ", ".join(registered_kinds()) or _("none")}
        ) from None


def build_engine(config: EndpointConfig) -> Engine:
    """The engine to call from this process: the real one, or a worker proxy."""
    cls = engine_class(config.engine)
    if cls.runs_in == "worker":
        return WorkerEngine(config)
    return cls(config)


def build_local_engine(config: EndpointConfig) -> Engine:
    """The real engine, inside the worker process that will run it."""
    return engine_class(config.engine)(config)
