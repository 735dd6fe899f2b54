"""Routing's part of the shared state on ``/metrics``, read when scraped: each enabled
model instance's circuit and health (registry + cache) and each budgeted key's used
fraction of its period. Registered with ``core.metrics.register_state`` in
``RoutingConfig.ready()``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from django.db.models import Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from core.cache import process_cache
from core.metrics import CIRCUIT_VALUES

from .breaker import Breaker
from .key_models import ApiKey
from .limits import period_window
from .models import HealthState, ModelEndpoint


def model_states() -> Iterable[Metric]:
    circuit = GaugeMetricFamily(
        "openclaw_circuit_state",
        "Circuit of each enabled model instance: 0 closed, 1 half-open, 2 open.",
        labels=["model", "endpoint"])
    up = GaugeMetricFamily(
        "openclaw_model_instance_up",
        "1 when an enabled model instance is usable (not unhealthy, circuit not open).",
        labels=["model", "endpoint"])
    breaker = Breaker()
    for pk, name, health in ModelEndpoint.objects.filter(enabled=True).values_list(
            "pk", "name", "health"):
        state = breaker.state(pk).state
        labels = [name, str(pk)]
        circuit.add_metric(labels, CIRCUIT_VALUES[str(state)])
        usable = health != HealthState.UNHEALTHY and state != "open"
        up.add_metric(labels, 1 if usable else 0)
    yield from (circuit, up)


def budget_states() -> Iterable[Metric]:
    ratio = GaugeMetricFamily(
        "openclaw_api_key_budget_used_ratio",
        "Fraction of the current period's token budget used, per budgeted API key "
        "(key: the key family's first prefix).", labels=["key", "name"])
    now = timezone.now()
    keys = (ApiKey.objects.filter(token_budget__isnull=False, revoked_at__isnull=True)
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
            .filter(Q(grace_until__isnull=True) | Q(grace_until__gt=now))
            .only("family", "name", "token_budget", "budget_period"))
    counters = {}
    for key in keys:
        label, _left = period_window(key.budget_period, now)
        counters[f"apikey:{key.family}:budget:{label}"] = key
    used = process_cache().get_many(list(counters))
    for name, key in counters.items():
        budget = cast(int, key.token_budget)  # the query keeps budgeted keys only
        ratio.add_metric([key.family, key.name], int(used.get(name) or 0) / budget)
    yield ratio
