"""How the gateway tries a request: the candidates on its route in order, the budget
of attempts and time it has, and the bookkeeping of each call (circuits, in-flight
counts, time to first token).

``candidates`` names the models to try from the route decision ([target,
*fallbacks]); the instances of each are ordered by the model's balancing strategy
(``routing.balancer``: weighted random, least busy or lowest latency; instances whose
circuit is not closed last, drained ones never) and instances whose circuit is open are
skipped (``routing.breaker``). The route and the endpoints come from the routing table
(``routing.rules.TABLE``), read with the balancing statistics in one Redis round trip.

Attempts are bounded: ``MAX_ATTEMPTS_PER_INSTANCE``, ``MAX_ATTEMPTS`` per request, and
none starts (nor a backoff ends) past the request deadline (``x-openclaw-deadline-ms``
when the caller passes it on, else ``DEFAULT_DEADLINE_S``). The deadline also bounds
each attempt's wait for its first byte (``Budget.first_byte_wait``): while a fallback
is left to try, at most half of what remains of it, so that a hanging instance is
given up in time for the next one to answer; the last one may wait for all that
remains. Once an answer has started, the instance's total timeout bounds it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.utils.translation import gettext as _

from core import metrics, shared_state
from core.outage import DB_UNAVAILABLE, OUTAGE, UNAVAILABLE
from core.redis_pipeline import RedisUnavailable
from inference.engines.base import ChatRequest
from inference.errors import ConnectionFailed, EngineError, EngineTimeout, RateLimited

from .balancer import Balancer, Stats, order, strategy_of
from .breaker import Breaker, counts_as_failure
from .models import Balancing, HealthState, ModelEndpoint
from .rules import TABLE, RequestFacts, RouteDecision, RoutingTable, resolve_route
from .services import record_health

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Set on a request (by the PII plugin in hybrid mode) whose content must stay on local
# models: the chain is cut to instances that run on the operator's machines.
SENSITIVE_FLAG = "sensitive_data"

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


# --- retries and deadlines ------------------------------------------------------------

MAX_ATTEMPTS_PER_INSTANCE = 2  # the first call and one retry of the same instance
MAX_ATTEMPTS = 6  # per request, over every instance and model
BACKOFF_S = 0.05  # × attempt, jittered ×0.5–1.5
MAX_BACKOFF_S = 2.0  # a longer Retry-After moves on to the next instance instead
DEFAULT_DEADLINE_S = 60.0
FALLBACK_SHARE = 0.5  # of the deadline left, kept for the instances after the one tried
MIN_WAIT_S = 0.1  # the shortest first-byte wait an attempt is given
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

    def first_byte_wait(self, limit: float, more: bool) -> float:
        """How long the next attempt may wait for its first byte: its instance's
        first-byte timeout (``limit``), and no more than what remains of the deadline —
        half of it while a fallback (``more``) is left to try."""
        left = self.remaining() * ((1 - FALLBACK_SHARE) if more else 1)
        return max(MIN_WAIT_S, min(limit, left))


def out_of_attempts(last_error: EngineError | None) -> EngineError:
    """What a request whose attempts ended answers: its last failure, or — when its
    deadline (``x-openclaw-deadline-ms``) was spent before any instance was tried — a
    timeout, never an internal error."""
    return last_error or EngineTimeout(_("The request's deadline passed before a model "
                                         "could be called."), phase="total")


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
    """One instance to call: its model name, whether it is the half-open probe, the
    model's balancing strategy (which says what to measure), and whether an instance
    with a closed circuit follows it on the route (``more``: a fallback, for which the
    attempt leaves time, ``Budget.first_byte_wait``)."""

    name: str
    instance: ModelEndpoint
    probe: bool
    strategy: str
    more: bool = False


def _plan(facts: RequestFacts) -> tuple[RouteDecision, RoutingTable]:
    close_old_connections()  # a thread of the pool, outside Django's request cycle
    table = TABLE.get()
    return resolve_route(facts, table), table


async def _aplan(facts: RequestFacts) -> tuple[RouteDecision, RoutingTable, Stats]:
    """The route, the routing table and the balancing statistics (circuits, in-flight
    counts, TTFT averages) of every instance on it — from the event loop, in one Redis
    round trip that also reads the routing version token. This process's table is used
    when that token says it is current; otherwise it is reloaded (a thread hop, once per
    change) and the statistics read again."""
    if not shared_state.available():
        decision, table = await sync_to_async(_plan)(facts)
        return decision, table, await sync_to_async(Balancer().stats_for)(
            _chain_ids(decision, table.endpoints))
    for _attempt in range(3):
        held = TABLE.peek()
        if held is None:
            await sync_to_async(_plan)(facts)  # (re)load the table
            continue
        table = held.value
        decision = resolve_route(facts, table)
        ids_by_strategy = _chain_ids(decision, table.endpoints)
        keys = Balancer.keys_for(ids_by_strategy)
        names = list(keys)
        try:
            values = await shared_state.get_many([TABLE.name, *names])
        except RedisUnavailable:  # the table as held; circuits and statistics unknown
            return decision, table, Stats()
        if values[0] != held.version:
            TABLE.clear()  # changed since: reload, then read the stats again
            continue
        found = {n: v for n, v in zip(names, values[1:], strict=True) if v is not None}
        return decision, table, Balancer.parse(
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


def _mentions(condition: object, field_name: str) -> bool:
    """Whether a rule's condition (nested ``all`` / ``any`` / ``not``) tests the field."""
    if isinstance(condition, dict):
        return condition.get("field") == field_name or any(
            _mentions(value, field_name) for value in condition.values())
    if isinstance(condition, list):
        return any(_mentions(item, field_name) for item in condition)
    return False


@dataclass
class _Tally:
    """What a route held, for the error when nothing on it can be tried."""

    found: int = 0
    yielded: int = 0
    circuit_open: int = 0
    not_local: int = 0
    too_small_count: int = 0
    largest: tuple[int, str] | None = None  # the largest context window that was too small

    def too_small(self, instance: ModelEndpoint) -> None:
        self.too_small_count += 1
        if self.largest is None or instance.context_window > self.largest[0]:
            self.largest = (instance.context_window, instance.name)


async def candidates(facts: RequestFacts, request: ChatRequest, meta: GatewayMeta,
                     skip: set[str] | None = None) -> AsyncIterator[Pick]:
    """Yield the instances in the order to try them, skipping open circuits and the
    models in ``skip``; raises ``GatewayError`` when the chain has no instance at all,
    none with a large enough context window, or only drained or open ones.

    A rule routing on the context length (a context-window fallback) whose models have
    no instance falls back to the model asked for, as if the rule had not matched."""
    decision, routing_table, stats = await _aplan(facts)
    meta.decision, meta.rule = decision, decision.rule.name if decision.rule else None
    needed = facts.context_length + (request.max_tokens or 0)
    tally = _Tally()
    chain = list(dict.fromkeys(decision.chain))
    async for pick in _route(chain, facts, needed, routing_table, stats, tally, skip):
        yield pick
    rule = decision.rule
    if not tally.found and rule is not None and facts.model not in chain \
            and facts.model in routing_table.registered \
            and _mentions(rule.condition, "context_length"):
        chain = [facts.model]
        async for pick in _route(chain, facts, needed, routing_table, stats, tally, skip):
            yield pick
    if not tally.yielded:
        raise _nothing_to_try(facts, decision, chain, needed, tally)


async def _route(chain: list[str], facts: RequestFacts, needed: int, routing_table: RoutingTable,
                 stats: Stats, tally: _Tally, skip: set[str] | None) -> AsyncIterator[Pick]:
    local_only = SENSITIVE_FLAG in facts.flags
    for position, name in enumerate(chain):
        instances = routing_table.endpoints.get(name, []) if name else []
        if local_only:  # hybrid mode: sensitive data never leaves the operator's machines
            kept = [i for i in instances if i.runs_here()]
            tally.not_local += len(instances) - len(kept)
            instances = kept
        tally.found += len(instances)
        fitting = [i for i in instances if i.context_window >= needed]
        for instance in instances:
            if instance.context_window < needed:
                tally.too_small(instance)
        if not fitting:
            continue
        strategy = strategy_of(instances)
        ordered = _ordered(fitting, strategy, stats)
        for index, (instance, closed) in enumerate(ordered):
            if skip and name in skip:
                break
            allowed, probe = (True, False) if closed else await _bookkeeping(
                Breaker().allow, instance.pk, default=(True, False))
            if not allowed:
                tally.circuit_open += 1
                continue
            tally.yielded += 1
            more = any(later for _i, later in ordered[index + 1:]) or _fallback_after(
                chain[position + 1:], facts, needed, routing_table, stats, skip)
            yield Pick(name, instance, probe, strategy, more)


def _fallback_after(names: list[str], facts: RequestFacts, needed: int,
                    routing_table: RoutingTable, stats: Stats, skip: set[str] | None) -> bool:
    """Whether a later model of the chain has an instance ``_route`` would try, its
    circuit closed: a fallback for the one being tried."""
    local_only = SENSITIVE_FLAG in facts.flags
    return any(
        i.weight > 0 and i.context_window >= needed and stats.circuit_closed.get(i.pk, True)
        and (i.runs_here() or not local_only)
        for name in names if name and not (skip and name in skip)
        for i in routing_table.endpoints.get(name, []))


def _nothing_to_try(facts: RequestFacts, decision: RouteDecision, chain: list[str],
                    needed: int, tally: _Tally) -> GatewayError:
    if not tally.found and tally.not_local:
        return GatewayError(403, "no_local_model",
                            _("The request contains sensitive data, which is only sent to "
                              "models running on this installation, and its route has "
                              "none."))
    if not tally.found:
        named = " → ".join(f"“{name}”" for name in chain if name)
        if decision.rule is None or chain == [facts.model]:
            message = _("The model “%(model)s” does not exist or has no enabled instance "
                        "(no routing rule sends it elsewhere).") % {"model": facts.model}
        else:
            message = _("The model “%(model)s” is routed by the rule “%(rule)s” to "
                        "%(route)s, and none of these models has an enabled instance "
                        "(missing: %(missing)s).") % {
                "model": facts.model, "rule": decision.rule.label, "route": named,
                "missing": ", ".join(decision.unregistered) or named}
        return GatewayError(404, "model_not_found", message)
    if tally.largest is not None and tally.too_small_count == tally.found:
        window, name = tally.largest
        return GatewayError(400, "context_length_exceeded", _(
            "This request needs about %(needed)d tokens (its prompt ≈ %(prompt)d and "
            "max_tokens %(max)d), more than the context window of “%(model)s” "
            "(%(window)d tokens), the largest on its route.") % {
                "needed": needed, "prompt": facts.context_length,
                "max": needed - facts.context_length, "model": name, "window": window})
    if tally.circuit_open:
        return GatewayError(503, "no_available_instance",
                            _("Every instance on this route has its circuit open after "
                              "repeated backend failures; try again in a few seconds."))
    return GatewayError(503, "no_available_instance",
                        _("Every instance on this route is drained (weight 0)."))


def tried(meta: GatewayMeta, name: str, instance: ModelEndpoint) -> None:
    if name not in meta.models_tried:
        meta.models_tried.append(name)
    meta.model, meta.instance_id = name, instance.pk


# --- circuit and balancing bookkeeping ------------------------------------------------


async def _bookkeeping(fn: Callable[..., T], *args: object, default: T) -> T:
    """A circuit or balancing update (Redis; the instance's health, the database) in a
    thread; skipped, ``default``, while either is away: the request goes on, circuits
    and statistics stand still."""
    if OUTAGE.down:
        return default
    try:
        return await sync_to_async(fn)(*args)
    except UNAVAILABLE as exc:
        OUTAGE.mark_down(exc)
    except DB_UNAVAILABLE:
        logger.warning("health of a model instance not recorded: the database is away")
    return default


async def succeeded(instance: ModelEndpoint, probe: bool) -> None:
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

    await _bookkeeping(record, default=None)
    instance.health = HealthState.HEALTHY


async def failed(instance: ModelEndpoint, exc: EngineError, probe: bool) -> bool:
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

    opened = await _bookkeeping(record, default=False)
    if opened:
        instance.health = HealthState.UNHEALTHY
    return opened


async def no_verdict(instance: ModelEndpoint, probe: bool) -> None:
    """The call ended without success or failure (cancelled): give the probe back."""
    if probe:
        await _bookkeeping(Breaker().release_probe, instance.pk, default=None)


async def call_started(pick: Pick, budget: Budget) -> float:
    """Count the attempt (and, for least-busy models, the request in flight)."""
    budget.attempts += 1
    if pick.strategy == Balancing.LEAST_BUSY:
        await _bookkeeping(Balancer().acquire, pick.instance.pk, default=None)
    return time.perf_counter()


async def call_ended(pick: Pick, first_token_s: float | None) -> None:
    """Release the in-flight count, or fold the time to first token into the average."""
    if pick.strategy == Balancing.LEAST_BUSY:
        await _bookkeeping(Balancer().release, pick.instance.pk, default=None)
    elif pick.strategy == Balancing.LATENCY and first_token_s is not None:
        await _bookkeeping(Balancer().observe_ttft, pick.instance.pk, first_token_s,
                           default=0.0)
