"""Usage logging through a real worker on the ``logs`` queue: the caller's cost of
``log_usage`` is the same whether the worker runs or not, records wait in the broker
while it is stopped and are written, each once, when it comes back."""

from __future__ import annotations

import statistics
import time

import pytest
from django.conf import settings

from routing.usage import log_usage, usage_buffer
from routing.usage_models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)
CALLS = 500


def timed_calls(prefix: str) -> list[float]:
    """Seconds taken by each of ``CALLS`` log_usage calls."""
    spent = []
    for n in range(CALLS):
        started = time.perf_counter()
        log_usage(key_prefix=prefix, model="echo", instance=1, tokens_in=n, tokens_out=1,
                  latency_ms=3.0, ttft_ms=1.0, status=200, request_id=f"{prefix}-{n}")
        spent.append(time.perf_counter() - started)
    return spent


def wait_for_rows(prefix: str, count: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while (found := UsageRecord.objects.filter(key_prefix=prefix).count()) < count:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return found


def queued(queue: str) -> int:
    from openclaw_site.celery import app

    with app.connection_for_write() as connection:
        return connection.default_channel.client.llen(queue)


def test_logging_cost_is_unchanged_while_the_logging_worker_is_stopped(start_worker):
    worker = start_worker(queues=settings.OPENCLAW_LOG_QUEUE)
    running = timed_calls("oc_up")
    assert wait_for_rows("oc_up", CALLS) == CALLS

    # when
    worker.stop()
    stopped = timed_calls("oc_down")
    usage_buffer.flush()

    # then: the calls cost the same, and the records wait in the broker
    assert statistics.median(stopped) < 50e-6
    assert statistics.median(stopped) < 3 * statistics.median(running) + 10e-6
    assert max(stopped) < 0.05
    assert queued(settings.OPENCLAW_LOG_QUEUE) >= 1
    assert UsageRecord.objects.filter(key_prefix="oc_down").count() == 0

    start_worker(queues=settings.OPENCLAW_LOG_QUEUE)
    assert wait_for_rows("oc_down", CALLS) == CALLS
    time.sleep(0.5)
    assert UsageRecord.objects.filter(key_prefix="oc_down").count() == CALLS  # none twice
