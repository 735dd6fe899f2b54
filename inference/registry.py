"""The engine registry: ``@register_engine("openai")`` on a class, filled at
start-up when ``InferenceConfig.ready()`` imports the engine modules."""

from __future__ import annotations

from collections.abc import Callable

from .engines.base import EndpointConfig, Engine
from .errors import EngineUnavailable

_engines: dict[str, type[Engine]] = {}


def register_engine(*kinds: str) -> Callable[[type[Engine]], type[Engine]]:
    def decorator(cls: type[Engine]) -> type[Engine]:
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
            f"no engine for kind {kind!r} in this process (registered: "
            f"{', '.join(registered_kinds()) or 'none'})"
        ) from None


def build_engine(config: EndpointConfig) -> Engine:
    return engine_class(config.engine)(config)
