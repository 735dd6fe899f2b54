"""The gateway: one request from the route decision to an answering engine.

``resolve_route`` names the models to try ([target, *fallbacks]); the instances of each
are ordered by the model's balancing strategy (``routing.balancer``: weighted random,
least busy or lowest latency; instances whose circuit is not closed last, drained ones
never) and instances whose circuit is open are skipped (``routing.breaker``).

A retryable engine failure before the first token moves on to the next instance or
model; a transient one (connection error, connect timeout, 502/503/504, a 429 with a
short Retry-After) first retries the same instance once after a short jittered backoff.
Attempts are bounded: ``MAX_ATTEMPTS_PER_INSTANCE``, ``MAX_ATTEMPTS`` per request, and
none starts (nor a backoff ends) past the request deadline (``x-openclaw-deadline-ms``
when the caller passes it on, else ``DEFAULT_DEADLINE_S``), and each waits for its first
byte no longer than its instance's first-byte timeout and what the deadline leaves it
— half of what remains while a fallback is left, so a hanging instance is given up in
time for the fallback to answer (``_attempt_config``). A failure after the first
token, in a stream, continues the answer on the next model (``CONTINUE_PROMPT``). Every
call's outcome feeds the instance's circuit.

The enabled endpoints come from the routing table (``routing.rules.TABLE``), kept per
process and reloaded when its version token changes — a request makes no endpoint query
while nothing changed. Health written with ``.update()`` does not bump that token, so
the order reads health from the circuits in the cache, never from the kept rows.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from django.utils.translation import gettext as _

from core import metrics
from inference.engines.base import (
    ChatRequest,
    Completion,
    Delta,
    EmbeddingResult,
    EndpointConfig,
    Engine,
)
from inference.errors import EngineError
from inference.registry import build_engine, engine_class

from .attempts import (
    DEADLINE_HEADER,
    DEFAULT_DEADLINE_S,
    MAX_ATTEMPTS_PER_INSTANCE,
    SENSITIVE_FLAG,
    Budget,
    GatewayError,
    GatewayMeta,
    Pick,
    call_ended,
    call_started,
    candidates,
    deadline_from_headers,
    failed,
    no_verdict,
    out_of_attempts,
    retry_delay,
    succeeded,
    tried,
)
from .balancer import weighted_shuffle
from .models import HealthState, ModelEndpoint
from .rules import RequestFacts
from .services import endpoint_config

__all__ = ["DEADLINE_HEADER", "DEFAULT_DEADLINE_S", "SENSITIVE_FLAG", "GatewayError",
           "GatewayMeta", "complete", "continuation", "deadline_from_headers", "embed",
           "stream", "weighted_order"]

# Sent (after the partial answer as the assistant's turn) to the model that takes over
# a stream that died mid-answer. It asks for the rest only, so that the client, which
# already has the partial text, can simply append what follows.
CONTINUE_PROMPT = ("Your previous answer was cut off. Continue it exactly where it "
                   "stopped: do not repeat any of it, do not comment, write only the rest.")


def weighted_order(instances: list[ModelEndpoint],
                   rng: random.Random | None = None) -> list[ModelEndpoint]:
    """Instances in weighted random order (no balancing statistics, no circuits): those
    not marked unhealthy first; weight 0 drains. For callers outside the chat route."""
    usable = [i for i in instances if i.weight > 0]
    healthy = [i for i in usable if i.health != HealthState.UNHEALTHY]
    unhealthy = [i for i in usable if i.health == HealthState.UNHEALTHY]
    return weighted_shuffle(healthy, rng) + weighted_shuffle(unhealthy, rng)


# --- complete and stream --------------------------------------------------------------


async def complete(facts: RequestFacts, request: ChatRequest,
                   deadline_s: float | None = None) -> tuple[Completion, GatewayMeta]:
    """A whole answer from the first instance on the route that gives one (retrying
    transient failures once on the same instance, within ``deadline_s``)."""
    meta, budget = GatewayMeta(), Budget(deadline_s)
    last_error: EngineError | None = None
    async for pick in candidates(facts, request, meta):
        if not budget.may_start():
            break
        if last_error is not None:
            metrics.fallback(meta.model, last_error.code)
        tried(meta, pick.name, pick.instance)
        for attempt in range(1, MAX_ATTEMPTS_PER_INSTANCE + 1):
            try:
                completion = await _generate(pick, request, meta, budget)
            except EngineError as exc:
                opened = await failed(pick.instance, exc, pick.probe)
                if not exc.retryable:
                    raise
                last_error = exc
                delay = None if opened or pick.probe else retry_delay(
                    exc, attempt, budget.remaining())
                if delay is None or not budget.may_start():
                    break
                await asyncio.sleep(delay)
                continue
            meta.models = [pick.name]
            return completion, meta
    raise out_of_attempts(last_error)  # candidates() raises when it yields nothing


async def _generate(pick: Pick, request: ChatRequest, meta: GatewayMeta,
                    budget: Budget) -> Completion:
    """One call; success is recorded here, a failure by the caller (it decides on more)."""
    engine = _engine(_attempt_config(pick, budget), request)
    started = await call_started(pick, budget)
    verdict, elapsed = False, None
    try:
        completion = await engine.generate(request)
        elapsed = time.perf_counter() - started  # whole answers: their time to the end
        verdict = True
        metrics.observe_generation(pick.name, pick.instance.pk, elapsed, None,
                                   completion.usage.prompt_tokens,
                                   completion.usage.completion_tokens)
        await succeeded(pick.instance, pick.probe)
        return completion
    except EngineError:
        verdict = True
        raise
    finally:
        meta.engine_seconds += time.perf_counter() - started
        if not verdict:
            await no_verdict(pick.instance, pick.probe)
        await call_ended(pick, elapsed)
        await engine.aclose()


async def stream(facts: RequestFacts, request: ChatRequest, meta: GatewayMeta,
                 deadline_s: float | None = None) -> AsyncIterator[Delta]:
    """Deltas from the first instance on the route that produces one; ``meta`` is
    filled in before the first delta is yielded. A transient failure before an
    instance's first delta retries it once; a retryable failure after it continues the
    answer on the next model (``meta.models`` lists those that answered); with no model
    left the failure is raised."""
    budget = Budget(deadline_s)
    last_error: EngineError | None = None
    given = Given()
    skip: set[str] = set()  # models that failed mid-answer
    async for pick in candidates(facts, request, meta, skip):
        if not budget.may_start():
            break
        name, instance, probe = pick.name, pick.instance, pick.probe
        if last_error is not None:
            metrics.fallback(meta.model, last_error.code)
        tried(meta, name, instance)
        for attempt in range(1, MAX_ATTEMPTS_PER_INSTANCE + 1):
            partial = given.text
            call = continuation(request, partial, given.spent) if partial else request
            engine = _engine(_attempt_config(pick, budget), call)
            deltas = engine.stream(call)
            started = await call_started(pick, budget)
            verdict = False
            attempt_given = Given()
            first_token_s: float | None = None
            usage = None  # the backend's own count, on its last delta
            delay: float | None = None
            try:
                while (delta := await _timed(meta, deltas)) is not None:
                    if first_token_s is None:
                        first_token_s = time.perf_counter() - started
                    if name not in meta.models and (delta.speaks or delta.finish_reason):
                        meta.models.append(name)
                    given.add(delta)
                    attempt_given.add(delta)
                    usage = delta.usage or usage
                    yield delta
                verdict = True
                metrics.observe_stream(name, instance.pk, started, first_token_s, usage,
                                       given.spent)
                await succeeded(instance, probe)
                return
            except EngineError as exc:
                verdict = True
                opened = await failed(instance, exc, probe)
                if attempt_given.finished:
                    return  # the answer was whole; only the stream's tail was lost
                if not exc.retryable or given.shaped:
                    raise  # a tool call, a refusal or another choice is never continued
                last_error = exc
                if name in meta.models:
                    skip.add(name)  # it failed mid-answer: the next model continues
                if first_token_s is None and not (opened or probe):
                    delay = retry_delay(exc, attempt, budget.remaining())
                if delay is None or not budget.may_start():
                    break
            finally:
                if not verdict:
                    await no_verdict(instance, probe)
                await call_ended(pick, first_token_s)
                await _close(engine, deltas)
            await asyncio.sleep(delay)
    raise out_of_attempts(last_error)


class Given:
    """What a stream has handed the client: choice 0's text and its tokens (a failover
    continues from them), whether anything else went out — tool-call fragments, a
    refusal, another choice — which no continuation can complete, and which choices
    have ended."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spent = 0
        self.shaped = False
        self.seen: set[int] = set()
        self.ended: set[int] = set()

    def add(self, delta: Delta) -> None:
        self.seen.add(delta.index)
        if delta.finish_reason:
            self.ended.add(delta.index)
        if delta.index or delta.tool_calls or delta.refusal:
            self.shaped = True
        elif delta.text:
            self.parts.append(delta.text)
        self.spent += delta.tokens or (1 if delta.text else 0)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def finished(self) -> bool:
        return bool(self.ended) and self.seen <= self.ended


def _attempt_config(pick: Pick, budget: Budget) -> EndpointConfig:
    """The instance's settings for one attempt, its first-byte wait (and connect
    timeout) cut to what the request's deadline leaves it (``Budget.first_byte_wait``)."""
    config = endpoint_config(pick.instance)
    wait = budget.first_byte_wait(config.first_byte_timeout, pick.more)
    if wait >= config.first_byte_timeout:
        return config
    return replace(config, first_byte_timeout=wait,
                   connect_timeout=min(config.connect_timeout, wait))


def _engine(config: EndpointConfig, request: ChatRequest) -> Engine:
    """The engine of ``config``, once its kind has said it can answer ``request``
    (``BadRequest``, a 400 naming the field, when it cannot)."""
    engine_class(config.engine).check_request(config, request)
    return build_engine(config)


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


# --- embeddings -----------------------------------------------------------------------


async def embed(model: str, texts: list[str]) -> tuple[EmbeddingResult, GatewayMeta]:
    """Vectors from the model's enabled instances, by weight, healthy ones first; a
    retryable failure moves on to the next instance. No routing rules apply here."""
    meta = GatewayMeta(model=model, models_tried=[model], models=[model])
    instances = [e async for e in ModelEndpoint.objects.filter(name=model, enabled=True)]
    ordered = weighted_order(instances)
    if not ordered:
        raise GatewayError(404, "model_not_found",
                           _("The model “%(model)s” does not exist or has no enabled "
                             "instance.") % {"model": model})
    last_error: EngineError | None = None
    for instance in ordered:
        meta.instance_id = instance.pk
        engine = build_engine(endpoint_config(instance))
        started = time.perf_counter()
        try:
            return await engine.embed(texts), meta
        except EngineError as exc:
            if not exc.retryable:
                raise
            last_error = exc
        finally:
            meta.engine_seconds += time.perf_counter() - started
            await engine.aclose()
    assert last_error is not None
    raise last_error
