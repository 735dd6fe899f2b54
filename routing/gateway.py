"""The gateway: one chat request from the route decision to an answering engine.

``resolve_route`` names the models to try ([target, *fallbacks]); the instances of each
are ordered by the model's balancing strategy (``routing.balancer``: weighted random,
least busy or lowest latency; instances whose circuit is not closed last, drained ones
never) and instances whose circuit is open are skipped (``routing.breaker``).

A retryable engine failure before the first token moves on to the next instance or
model; a transient one (connection error, connect timeout, 502/503/504, a 429 with a
short Retry-After) first retries the same instance once after a short jittered backoff.
Attempts are bounded: ``MAX_ATTEMPTS_PER_INSTANCE``, ``MAX_ATTEMPTS`` per request, and
none starts (nor a backoff ends) past the request deadline (``x-openclaw-deadline-ms``
when the caller passes it on, else ``DEFAULT_DEADLINE_S``). A failure after the first
token, in a stream, continues the answer on the next model (``CONTINUE_PROMPT``). Every
call's outcome feeds the instance's circuit.

The enabled endpoints are kept per process, grouped by model name, and reloaded when the
routing version token (``routing.rules``) changes — a request makes no endpoint query
while nothing changed. Health written with ``.update()`` does not bump that token, so
the order reads health from the circuits in the cache, never from the kept rows.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.utils.translation import gettext as _

from inference.engines.base import ChatRequest, Completion, Delta, Engine
from inference.errors import ConnectionFailed, EngineError, EngineTimeout, RateLimited
from inference.registry import build_engine
from openclaw_site import metrics

from . import hot, rules
from .balancer import Balancer, Stats, order, strategy_of, weighted_shuffle
from .breaker import Breaker, counts_as_failure
from .models import Balancing, HealthState, ModelEndpoint
from .rules import RequestFacts, RouteDecision, resolve_route
from .services import endpoint_config, record_health

logger = logging.getLogger(__name__)

# Set on a request (by the PII plugin in hybrid mode) whose content must stay on local
# models: the chain is cut to instances that run on the operator's machines.
SENSITIVE_FLAG = "sensitive_data"

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
    route_override: str | None = None  # e.g. "cache; …" for an answer from the cache
    decision: RouteDecision | None = None  # the routing rules' decision, once made

    @property
    def route(self) -> str:
        """``<rule name or "direct">; instance=<id>``, for the ``x-openclaw-route`` header."""
        if self.route_override is not None:
            return self.route_override
        return f"{self.rule or 'direct'}; instance={self.instance_id}"

    def overhead_ms(self) -> float:
        """Time spent in OpenClaw itself so far: the total minus the time inside engines."""
        return max(0.0, (time.perf_counter() - self.started - self.engine_seconds) * 1000)


def weighted_order(instances: list[ModelEndpoint],
                   rng: random.Random | None = None) -> list[ModelEndpoint]:
    """Instances in weighted random order (no balancing statistics, no circuits): those
    not marked unhealthy first; weight 0 drains. For callers outside the chat route."""
    rng = rng or random
    usable = [i for i in instances if i.weight > 0]
    healthy = [i for i in usable if i.health != HealthState.UNHEALTHY]
    unhealthy = [i for i in usable if i.health == HealthState.UNHEALTHY]
    return weighted_shuffle(healthy, rng) + weighted_shuffle(unhealthy, rng)


# --- retries and deadlines ------------------------------------------------------------

MAX_ATTEMPTS_PER_INSTANCE = 2  # the first call and one retry of the same instance
MAX_ATTEMPTS = 6  # per request, over every instance and model
BACKOFF_S = 0.05  # × attempt, jittered ×0.5–1.5
MAX_BACKOFF_S = 2.0  # a longer Retry-After moves on to the next instance instead
DEFAULT_DEADLINE_S = 60.0
DEADLINE_HEADER = "x-openclaw-deadline-ms"
RETRY_STATUSES = {502, 503, 504}


def deadline_from_headers(headers: Mapping[str, str]) -> float | None:
    """The request deadline in seconds from ``x-openclaw-deadline-ms``; None when absent
    or not a positive number."""
    try:
        value = float(headers.get(DEADLINE_HEADER) or "")
    except ValueError:
        return None
    return value / 1000 if value > 0 else None


class Budget:
    """What is left of one request's attempts and time (monotonic clock)."""

    def __init__(self, deadline_s: float | None = None):
        self.ends = time.monotonic() + (deadline_s or DEFAULT_DEADLINE_S)
        self.attempts = 0

    def remaining(self) -> float:
        return self.ends - time.monotonic()

    def may_start(self) -> bool:
        return self.attempts < MAX_ATTEMPTS and self.remaining() > 0


def transient(exc: EngineError) -> bool:
    """Worth calling the same instance again: the failure is likely to pass by itself."""
    if isinstance(exc, RateLimited | ConnectionFailed):
        return True
    if isinstance(exc, EngineTimeout):
        return exc.phase == "connect"  # a slow answer would be as slow again
    return exc.status in RETRY_STATUSES


def retry_delay(exc: EngineError, attempt: int, remaining: float,
                rng: random.Random | None = None) -> float | None:
    """Seconds to wait before retrying the same instance after its ``attempt``-th
    failure, or None to move on: not transient, out of attempts, or a wait that would
    be too long or end past the deadline."""
    if attempt >= MAX_ATTEMPTS_PER_INSTANCE or not transient(exc):
        return None
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        delay = float(exc.retry_after)
    else:
        delay = BACKOFF_S * attempt * (0.5 + (rng or random).random())
    if delay > MAX_BACKOFF_S or delay >= remaining:
        return None
    return delay


# --- candidates ------------------------------------------------------------------------


@dataclass
class Pick:
    """One instance to call: its model name, whether it is the half-open probe, and the
    model's balancing strategy (which says what to measure)."""

    name: str
    instance: ModelEndpoint
    probe: bool
    strategy: str


@dataclass
class _Endpoints:
    version: str | None = None
    by_name: dict[str, list[ModelEndpoint]] = field(default_factory=dict)


_endpoints = _Endpoints()
_endpoints_lock = threading.Lock()


def enabled_endpoints(version: str) -> dict[str, list[ModelEndpoint]]:
    """The enabled endpoints by model name (by id within a name), kept per process
    until the routing version changes: one query per change, none otherwise."""
    global _endpoints
    if _endpoints.version != version:
        with _endpoints_lock:
            if _endpoints.version != version:
                by_name: dict[str, list[ModelEndpoint]] = {}
                for endpoint in ModelEndpoint.objects.filter(enabled=True).order_by("name", "id"):
                    by_name.setdefault(endpoint.name, []).append(endpoint)
                _endpoints = _Endpoints(version, by_name)
    return _endpoints.by_name


def clear_endpoints() -> None:
    """Forget this process's endpoints (tests; the next request reloads)."""
    global _endpoints
    _endpoints = _Endpoints()


def _plan(facts: RequestFacts) -> tuple[RouteDecision, dict[str, list[ModelEndpoint]]]:
    close_old_connections()  # a thread of the pool, outside Django's request cycle
    decision = resolve_route(facts)
    # The version the rules copy was just checked against: no second cache GET.
    version = rules._local.version or rules.current_version()
    return decision, enabled_endpoints(version)


async def _aplan(facts: RequestFacts) -> tuple[RouteDecision, dict[str, list[ModelEndpoint]],
                                              Stats]:
    """The route, the endpoints and the balancing statistics (circuits, in-flight counts,
    TTFT averages) of every instance on it — from the event loop, in one Redis round
    trip that also reads the routing version token. The per-process copies of the rules
    and endpoints are used when that token says they are current; otherwise they are
    reloaded (a thread hop, once per change) and the statistics read again."""
    if not hot.available():
        decision, table = await sync_to_async(_plan)(facts)
        return decision, table, await sync_to_async(Balancer().stats_for)(
            _chain_ids(decision, table))
    for _attempt in range(3):
        copy, endpoints = rules._local, _endpoints
        if copy.version is None or endpoints.version != copy.version:
            await sync_to_async(_plan)(facts)  # (re)load both copies
            continue
        decision = resolve_route(facts, copy)
        ids_by_strategy = _chain_ids(decision, endpoints.by_name)
        keys = Balancer.keys_for(ids_by_strategy)
        names = list(keys)
        values = await hot.get_many([rules.VERSION_KEY, *names])
        if values[0] != copy.version:
            rules.clear_local_copy()  # changed since: reload, then read the stats again
            continue
        found = {n: v for n, v in zip(names, values[1:], strict=True) if v is not None}
        return decision, endpoints.by_name, Balancer.parse(
            [i for ids in ids_by_strategy.values() for i in ids], keys, found)
    decision, table = await sync_to_async(_plan)(facts)  # changing under us: read it directly
    return decision, table, Stats()


def _chain_ids(decision: RouteDecision,
               table: dict[str, list[ModelEndpoint]]) -> dict[str, list[int]]:
    """The endpoint ids on the route, by their model's balancing strategy."""
    ids: dict[str, list[int]] = {}
    for name in dict.fromkeys(decision.chain):
        instances = table.get(name, []) if name else []
        if instances:
            ids.setdefault(strategy_of(instances), []).extend(i.pk for i in instances)
    return ids


def _ordered(instances: list[ModelEndpoint], strategy: str,
             stats: Stats) -> list[tuple[ModelEndpoint, bool]]:
    """(instance, circuit closed) in the order to try them."""
    return [(i, stats.circuit_closed.get(i.pk, True))
            for i in order(instances, strategy, stats)]


async def _candidates(facts: RequestFacts, request: ChatRequest, meta: GatewayMeta,
                      skip: set[str] | None = None) -> AsyncIterator[Pick]:
    """Yield the instances in the order to try them, skipping open circuits and the
    models in ``skip``; raises ``GatewayError`` when the chain has no instance at all,
    none with a large enough context window, or only drained or open ones."""
    decision, table, stats = await _aplan(facts)
    meta.decision, meta.rule = decision, decision.rule.name if decision.rule else None
    needed = facts.context_length + (request.max_tokens or 0)
    local_only = SENSITIVE_FLAG in facts.flags
    found = too_small = yielded = circuit_open = not_local = 0
    for name in dict.fromkeys(decision.chain):
        instances = table.get(name, []) if name else []
        if local_only:  # hybrid mode: sensitive data never leaves the operator's machines
            kept = [i for i in instances if i.runs_here()]
            not_local += len(instances) - len(kept)
            instances = kept
        found += len(instances)
        fitting = [i for i in instances if i.context_window >= needed]
        too_small += len(instances) - len(fitting)
        if not fitting:
            continue
        strategy = strategy_of(instances)
        for instance, closed in _ordered(fitting, strategy, stats):
            if skip and name in skip:
                break
            allowed, probe = (True, False) if closed else await sync_to_async(
                Breaker().allow)(instance.pk)
            if not allowed:
                circuit_open += 1
                continue
            yielded += 1
            yield Pick(name, instance, probe, strategy)
    if yielded:
        return
    if not found and not_local:
        raise GatewayError(403, "no_local_model",
                           _("The request contains sensitive data, which is only sent to "
                             "models running on this installation, and its route has "
                             "none."))
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


# --- circuit and balancing bookkeeping ------------------------------------------------


async def _succeeded(instance: ModelEndpoint, probe: bool) -> None:
    """Close a probed circuit; mark the instance healthy only when it is not already
    (so a successful request on a healthy instance costs no cache or DB round trip).
    The kept row remembers it, since ``.update()`` does not reload the kept endpoints."""
    if not probe and instance.health == HealthState.HEALTHY:
        return

    def record() -> None:
        closed = Breaker().record_success(instance.pk, probe)
        if closed:
            metrics.circuit_changed(instance.name, instance.pk, "closed")
        detail = _("circuit closed: the probe request succeeded") if closed else ""
        record_health(instance.pk, HealthState.HEALTHY, detail, only_if_changed=True)

    await sync_to_async(record)()
    instance.health = HealthState.HEALTHY


async def _failed(instance: ModelEndpoint, exc: EngineError, probe: bool) -> bool:
    """Count a backend failure; when that opens the circuit, mark the instance unhealthy
    and say so (True)."""
    metrics.inference_failed(instance.name, exc.code)
    if not (probe or counts_as_failure(exc)):
        return False

    def record() -> bool:
        if Breaker().record_failure(instance.pk, exc, probe):
            logger.warning("circuit of %s (instance %s) opened: %s: %s",
                           instance.name, instance.pk, exc.code, exc.message)
            metrics.circuit_changed(instance.name, instance.pk, "open")
            record_health(instance.pk, HealthState.UNHEALTHY,
                          _("circuit open after %(code)s: %(message)s")
                          % {"code": exc.code, "message": exc.message})
            return True
        return False

    opened = await sync_to_async(record)()
    if opened:
        instance.health = HealthState.UNHEALTHY
    return opened


async def _no_verdict(instance: ModelEndpoint, probe: bool) -> None:
    """The call ended without success or failure (cancelled): give the probe back."""
    if probe:
        await sync_to_async(Breaker().release_probe)(instance.pk)


async def _call_started(pick: Pick, budget: Budget) -> float:
    """Count the attempt (and, for least-busy models, the request in flight)."""
    budget.attempts += 1
    if pick.strategy == Balancing.LEAST_BUSY:
        await sync_to_async(Balancer().acquire)(pick.instance.pk)
    return time.perf_counter()


async def _call_ended(pick: Pick, first_token_s: float | None) -> None:
    """Release the in-flight count, or fold the time to first token into the average."""
    if pick.strategy == Balancing.LEAST_BUSY:
        await sync_to_async(Balancer().release)(pick.instance.pk)
    elif pick.strategy == Balancing.LATENCY and first_token_s is not None:
        await sync_to_async(Balancer().observe_ttft)(pick.instance.pk, first_token_s)


# --- complete and stream --------------------------------------------------------------


async def complete(facts: RequestFacts, request: ChatRequest,
                   deadline_s: float | None = None) -> tuple[Completion, GatewayMeta]:
    """A whole answer from the first instance on the route that gives one (retrying
    transient failures once on the same instance, within ``deadline_s``)."""
    meta, budget = GatewayMeta(), Budget(deadline_s)
    last_error: EngineError | None = None
    async for pick in _candidates(facts, request, meta):
        if not budget.may_start():
            break
        if last_error is not None:
            metrics.fallback(meta.model, last_error.code)
        _tried(meta, pick.name, pick.instance)
        for attempt in range(1, MAX_ATTEMPTS_PER_INSTANCE + 1):
            try:
                completion = await _generate(pick, request, meta, budget)
            except EngineError as exc:
                opened = await _failed(pick.instance, exc, pick.probe)
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
    assert last_error is not None  # _candidates raises when it yields nothing
    raise last_error


async def _generate(pick: Pick, request: ChatRequest, meta: GatewayMeta,
                    budget: Budget) -> Completion:
    """One call; success is recorded here, a failure by the caller (it decides on more)."""
    engine = build_engine(endpoint_config(pick.instance))
    started = await _call_started(pick, budget)
    verdict, elapsed = False, None
    try:
        completion = await engine.generate(request)
        elapsed = time.perf_counter() - started  # whole answers: their time to the end
        verdict = True
        metrics.observe_generation(pick.name, pick.instance.pk, elapsed, None,
                                   completion.usage.prompt_tokens,
                                   completion.usage.completion_tokens)
        await _succeeded(pick.instance, pick.probe)
        return completion
    except EngineError:
        verdict = True
        raise
    finally:
        meta.engine_seconds += time.perf_counter() - started
        if not verdict:
            await _no_verdict(pick.instance, pick.probe)
        await _call_ended(pick, elapsed)
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
    sent: list[str] = []  # the text given to the client so far
    spent = 0  # its tokens
    skip: set[str] = set()  # models that failed mid-answer
    async for pick in _candidates(facts, request, meta, skip):
        if not budget.may_start():
            break
        name, instance, probe = pick.name, pick.instance, pick.probe
        if last_error is not None:
            metrics.fallback(meta.model, last_error.code)
        _tried(meta, name, instance)
        for attempt in range(1, MAX_ATTEMPTS_PER_INSTANCE + 1):
            partial = "".join(sent)
            call = continuation(request, partial, spent) if partial else request
            engine = build_engine(endpoint_config(instance))
            deltas = engine.stream(call)
            started = await _call_started(pick, budget)
            verdict = finished = False
            first_token_s: float | None = None
            usage = None  # the backend's own count, on its last delta
            delay: float | None = None
            try:
                while (delta := await _timed(meta, deltas)) is not None:
                    if first_token_s is None:
                        first_token_s = time.perf_counter() - started
                    if name not in meta.models and (delta.text or delta.finish_reason):
                        meta.models.append(name)
                    sent.append(delta.text)
                    spent += delta.tokens or (1 if delta.text else 0)
                    finished = finished or bool(delta.finish_reason)
                    usage = delta.usage or usage
                    yield delta
                verdict = True
                metrics.observe_stream(name, instance.pk, started, first_token_s, usage, spent)
                await _succeeded(instance, probe)
                return
            except EngineError as exc:
                verdict = True
                opened = await _failed(instance, exc, probe)
                if finished:
                    return  # the answer was whole; only the stream's tail was lost
                if not exc.retryable:
                    raise
                last_error = exc
                if name in meta.models:
                    skip.add(name)  # it failed mid-answer: the next model continues
                if first_token_s is None and not (opened or probe):
                    delay = retry_delay(exc, attempt, budget.remaining())
                if delay is None or not budget.may_start():
                    break
            finally:
                if not verdict:
                    await _no_verdict(instance, probe)
                await _call_ended(pick, first_token_s)
                await _close(engine, deltas)
            await asyncio.sleep(delay)
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
