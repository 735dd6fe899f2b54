"""The gateway: one chat request from the route decision to an answering engine.

``resolve_route`` names the models to try ([target, *fallbacks]); for each, one
enabled instance is picked by weighted random (instances marked unhealthy only
when no other is left) and instances whose circuit is open are skipped
(``routing.breaker``). A retryable engine failure before the first token moves on to
the next instance or model; one after it, in a stream, continues the answer on the
next model (``CONTINUE_PROMPT``). Every call's outcome feeds the instance's circuit.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from asgiref.sync import sync_to_async
from django.utils.translation import gettext as _

from inference.engines.base import ChatRequest, Completion, Delta, Engine
from inference.errors import EngineError
from inference.registry import build_engine

from .breaker import Breaker, counts_as_failure
from .models import HealthState, ModelEndpoint
from .rules import RequestFacts, resolve_route
from .services import endpoint_config, record_health

logger = logging.getLogger(__name__)

# Sent (after the partial answer as the assistant's turn) to the model that takes over
# a stream that died mid-answer. It asks for the rest only, so that the client, which
# already has the partial text, can simply append what follows.
CONTINUE_PROMPT = ("Your previous answer was cut off. Continue it exactly where it "
                   "stopped: do not repeat any of it, do not comment, write only the rest.")


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
    """Which rule, model and instance answered, what was tried, and the time spent.
    ``models`` names every model that produced part of the answer (several when a
    stream was continued after a failure)."""

    rule: str | None = None
    model: str = ""
    instance_id: int | None = None
    models_tried: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # those that answered (in order)
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


async def _candidates(facts: RequestFacts, request: ChatRequest, meta: GatewayMeta,
                      skip: set[str] | None = None):
    """Yield (model name, instance, is the half-open probe) in the order to try them,
    skipping open circuits and the models in ``skip``; raises ``GatewayError`` when the
    chain has no instance at all, none with a large enough context window, or only
    drained or open ones."""
    decision = await sync_to_async(resolve_route)(facts)
    meta.rule = decision.rule.name if decision.rule else None
    needed = facts.context_length + (request.max_tokens or 0)
    found = too_small = yielded = circuit_open = 0
    for name in dict.fromkeys(decision.chain):
        instances = await _instances(name) if name else []
        found += len(instances)
        fitting = [i for i in instances if i.context_window >= needed]
        too_small += len(instances) - len(fitting)
        for instance in weighted_order(fitting):
            if skip and name in skip:
                break
            allowed, probe = await sync_to_async(Breaker().allow)(instance.pk)
            if not allowed:
                circuit_open += 1
                continue
            yielded += 1
            yield name, instance, probe
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
    if circuit_open:
        raise GatewayError(503, "no_available_instance",
                           _("Every instance on this route has its circuit open after "
                             "repeated backend failures; try again in a few seconds."))
    raise GatewayError(503, "no_available_instance",
                       _("Every instance on this route is drained (weight 0)."))


def _tried(meta: GatewayMeta, name: str, instance: ModelEndpoint) -> None:
    if name not in meta.models_tried:
        meta.models_tried.append(name)
    meta.model, meta.instance_id = name, instance.pk


# --- circuit bookkeeping --------------------------------------------------------------


async def _succeeded(instance: ModelEndpoint, probe: bool) -> None:
    """Close a probed circuit; mark the instance healthy only when it is not already
    (so a successful request on a healthy instance costs no cache or DB round trip)."""
    if not probe and instance.health == HealthState.HEALTHY:
        return

    def record() -> None:
        closed = Breaker().record_success(instance.pk, probe)
        detail = _("circuit closed: the probe request succeeded") if closed else ""
        record_health(instance.pk, HealthState.HEALTHY, detail, only_if_changed=True)

    await sync_to_async(record)()


async def _failed(instance: ModelEndpoint, exc: EngineError, probe: bool) -> None:
    """Count a backend failure; when that opens the circuit, mark the instance unhealthy."""
    if not (probe or counts_as_failure(exc)):
        return

    def record() -> None:
        if Breaker().record_failure(instance.pk, exc, probe):
            logger.warning("circuit of %s (instance %s) opened: %s: %s",
                           instance.name, instance.pk, exc.code, exc.message)
            record_health(instance.pk, HealthState.UNHEALTHY,
                          _("circuit open after %(code)s: %(message)s")
                          % {"code": exc.code, "message": exc.message})

    await sync_to_async(record)()


async def _no_verdict(instance: ModelEndpoint, probe: bool) -> None:
    """The call ended without success or failure (cancelled): give the probe back."""
    if probe:
        await sync_to_async(Breaker().release_probe)(instance.pk)


# --- complete and stream --------------------------------------------------------------


async def complete(facts: RequestFacts, request: ChatRequest) -> tuple[Completion, GatewayMeta]:
    """A whole answer from the first instance on the route that gives one."""
    meta = GatewayMeta()
    last_error: EngineError | None = None
    async for name, instance, probe in _candidates(facts, request, meta):
        _tried(meta, name, instance)
        engine = build_engine(endpoint_config(instance))
        started, verdict = time.perf_counter(), False
        try:
            completion = await engine.generate(request)
            verdict = True
            await _succeeded(instance, probe)
        except EngineError as exc:
            verdict = True
            await _failed(instance, exc, probe)
            if not exc.retryable:
                raise
            last_error = exc
            continue
        finally:
            meta.engine_seconds += time.perf_counter() - started
            if not verdict:
                await _no_verdict(instance, probe)
            await engine.aclose()
        meta.models = [name]
        return completion, meta
    assert last_error is not None  # _candidates raises when it yields nothing
    raise last_error


async def stream(facts: RequestFacts, request: ChatRequest,
                 meta: GatewayMeta) -> AsyncIterator[Delta]:
    """Deltas from the first instance on the route that produces one; ``meta`` is
    filled in before the first delta is yielded. A retryable failure after it
    continues the answer on the next model (``meta.models`` lists those that answered);
    with no model left the failure is raised."""
    last_error: EngineError | None = None
    sent: list[str] = []  # the text given to the client so far
    spent = 0  # its tokens
    skip: set[str] = set()  # models that failed mid-answer
    async for name, instance, probe in _candidates(facts, request, meta, skip):
        _tried(meta, name, instance)
        partial = "".join(sent)
        call = continuation(request, partial, spent) if partial else request
        engine = build_engine(endpoint_config(instance))
        deltas = engine.stream(call)
        verdict = finished = False
        try:
            while (delta := await _timed(meta, deltas)) is not None:
                if name not in meta.models and (delta.text or delta.finish_reason):
                    meta.models.append(name)
                sent.append(delta.text)
                spent += delta.tokens or (1 if delta.text else 0)
                finished = finished or bool(delta.finish_reason)
                yield delta
            verdict = True
            await _succeeded(instance, probe)
            return
        except EngineError as exc:
            verdict = True
            await _failed(instance, exc, probe)
            if finished:
                return  # the answer was whole; only the stream's tail was lost
            if not exc.retryable:
                raise
            last_error = exc
            if name in meta.models:
                skip.add(name)  # it failed mid-answer: the next model continues
        finally:
            if not verdict:
                await _no_verdict(instance, probe)
            await _close(engine, deltas)
    assert last_error is not None
    raise last_error


def continuation(request: ChatRequest, partial: str, spent: int) -> ChatRequest:
    """The request that continues a partial answer: the original messages, the partial
    answer as the assistant's turn and ``CONTINUE_PROMPT``; ``max_tokens`` less the
    ``spent`` tokens already sent."""
    messages = [*request.messages, {"role": "assistant", "content": partial},
                {"role": "user", "content": CONTINUE_PROMPT}]
    max_tokens = max(1, request.max_tokens - spent) if request.max_tokens else None
    return replace(request, messages=messages, max_tokens=max_tokens)


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
