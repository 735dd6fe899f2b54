"""The gateway: one chat request from the route decision to an answering engine.

``resolve_route`` names the models to try ([target, *fallbacks]); for each, one
enabled instance is picked by weighted random (instances marked unhealthy only
when no other is left), and a retryable engine failure before the first token
moves on to the next instance or model. Mid-stream failover and circuit
breaking are not done here yet.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.utils.translation import gettext as _

from inference.engines.base import ChatRequest, Completion, Delta, Engine
from inference.errors import EngineError
from inference.registry import build_engine

from .models import HealthState, ModelEndpoint
from .rules import RequestFacts, resolve_route
from .services import endpoint_config


@dataclass
class GatewayError(Exception):
    """The gateway could not find anything to call: an HTTP status, a code, a message."""

    status: int
    code: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class GatewayMeta:
    """Which rule, model and instance answered, what was tried, and the time spent."""

    rule: str | None = None
    model: str = ""
    instance_id: int | None = None
    models_tried: list[str] = field(default_factory=list)
    engine_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    @property
    def route(self) -> str:
        """``<rule name or "direct">; instance=<id>``, for the ``x-openclaw-route`` header."""
        return f"{self.rule or 'direct'}; instance={self.instance_id}"

    def overhead_ms(self) -> float:
        """Time spent in OpenClaw itself so far: the total minus the time inside engines."""
        return max(0.0, (time.perf_counter() - self.started - self.engine_seconds) * 1000)


def weighted_order(instances: list[ModelEndpoint],
                   rng: random.Random | None = None) -> list[ModelEndpoint]:
    """Instances in the order to try them: weighted random without replacement among
    those not marked unhealthy, then the unhealthy ones the same way. Weight 0 drains."""
    rng = rng or random
    usable = [i for i in instances if i.weight > 0]
    healthy = [i for i in usable if i.health != HealthState.UNHEALTHY]
    unhealthy = [i for i in usable if i.health == HealthState.UNHEALTHY]
    return _shuffle(healthy, rng) + _shuffle(unhealthy, rng)


def _shuffle(items: list[ModelEndpoint], rng: random.Random) -> list[ModelEndpoint]:
    items, ordered = list(items), []
    while items:
        pick = rng.choices(items, weights=[i.weight for i in items])[0]
        items.remove(pick)
        ordered.append(pick)
    return ordered


async def _instances(name: str) -> list[ModelEndpoint]:
    """The enabled instances of one model: one query."""
    return [e async for e in ModelEndpoint.objects.filter(name=name, enabled=True)]


async def _candidates(facts: RequestFacts, request: ChatRequest, meta: GatewayMeta):
    """Yield (model name, instance) in the order to try them; raises ``GatewayError``
    when the chain has no instance at all or none with a large enough context window."""
    decision = await sync_to_async(resolve_route)(facts)
    meta.rule = decision.rule.name if decision.rule else None
    needed = facts.context_length + (request.max_tokens or 0)
    found = too_small = yielded = 0
    for name in dict.fromkeys(decision.chain):
        instances = await _instances(name) if name else []
        found += len(instances)
        fitting = [i for i in instances if i.context_window >= needed]
        too_small += len(instances) - len(fitting)
        for instance in weighted_order(fitting):
            yielded += 1
            yield name, instance
    if yielded:
        return
    if not found:
        raise GatewayError(404, "model_not_found",
                           _("The model “%(model)s” does not exist or has no enabled "
                             "instance.") % {"model": facts.model})
    if too_small == found:
        raise GatewayError(400, "context_length_exceeded",
                           _("The prompt (about %(tokens)d tokens with max_tokens) does not "
                             "fit the context window of any model on this route.")
                           % {"tokens": needed})
    raise GatewayError(503, "no_available_instance",
                       _("Every instance on this route is drained (weight 0)."))


def _tried(meta: GatewayMeta, name: str, instance: ModelEndpoint) -> None:
    if name not in meta.models_tried:
        meta.models_tried.append(name)
    meta.model, meta.instance_id = name, instance.pk


async def complete(facts: RequestFacts, request: ChatRequest) -> tuple[Completion, GatewayMeta]:
    """A whole answer from the first instance on the route that gives one."""
    meta = GatewayMeta()
    last_error: EngineError | None = None
    async for name, instance in _candidates(facts, request, meta):
        _tried(meta, name, instance)
        engine = build_engine(endpoint_config(instance))
        started = time.perf_counter()
        try:
            completion = await engine.generate(request)
        except EngineError as exc:
            if not exc.retryable:
                raise
            last_error = exc
            continue
        finally:
            meta.engine_seconds += time.perf_counter() - started
            await engine.aclose()
        return completion, meta
    assert last_error is not None  # _candidates raises when it yields nothing
    raise last_error


async def stream(facts: RequestFacts, request: ChatRequest,
                 meta: GatewayMeta) -> AsyncIterator[Delta]:
    """Deltas from the first instance on the route that produces one; ``meta`` is
    filled in before the first delta is yielded. Failures after it are raised."""
    last_error: EngineError | None = None
    async for name, instance in _candidates(facts, request, meta):
        _tried(meta, name, instance)
        engine = build_engine(endpoint_config(instance))
        deltas = engine.stream(request)
        try:
            first = await _timed(meta, deltas)
        except EngineError as exc:
            await _close(engine, deltas)
            if not exc.retryable:
                raise
            last_error = exc
            continue
        try:
            while first is not None:
                yield first
                first = await _timed(meta, deltas)
        finally:
            await _close(engine, deltas)
        return
    assert last_error is not None
    raise last_error


async def _timed(meta: GatewayMeta, deltas: AsyncIterator[Delta]) -> Delta | None:
    """The next delta (None at the end), its wait counted as engine time."""
    started = time.perf_counter()
    try:
        return await anext(deltas)
    except StopAsyncIteration:
        return None
    finally:
        meta.engine_seconds += time.perf_counter() - started


async def _close(engine: Engine, deltas: AsyncIterator[Delta]) -> None:
    aclose = getattr(deltas, "aclose", None)
    if aclose is not None:
        await aclose()
    await engine.aclose()
