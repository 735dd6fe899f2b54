"""A /v1 request's latency does not depend on the logging worker: through the real
web server, requests answered while the ``logs`` worker runs and while it is stopped
take the same time; the usage records of the second lot wait in the broker and are
written, each once, when the worker comes back."""

from __future__ import annotations

import statistics
import time

import httpx
import pytest
from django.conf import settings

from routing.keys import create_key
from routing.models import ModelEndpoint
from routing.usage_models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)
REQUESTS = 60


def timed_requests(url: str, secret: str) -> list[float]:
    body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
    spent = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"},
                      timeout=20) as client:
        for _ in range(REQUESTS):
            started = time.perf_counter()
            assert client.post("/v1/chat/completions", json=body).status_code == 200
            spent.append(time.perf_counter() - started)
    return spent


def records(prefix: str, count: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while (found := UsageRecord.objects.filter(key_prefix=prefix).count()) < count:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return found


def test_request_latency_is_the_same_with_the_logging_worker_stopped(
        live_server_url, openai_server, start_worker):
    ModelEndpoint.objects.create(name="fast", engine="openai", endpoint_url=openai_server.url,
                                 upstream_model="echo")
    up, up_secret = create_key("logged-up")
    down, down_secret = create_key("logged-down")
    worker = start_worker(queues=settings.OPENCLAW_LOG_QUEUE)
    timed_requests(live_server_url, up_secret)  # warm: connections, copies
    running = timed_requests(live_server_url, up_secret)
    assert records(up.prefix, 2 * REQUESTS) == 2 * REQUESTS

    # when: the logging worker is stopped
    worker.stop()
    stopped = timed_requests(live_server_url, down_secret)

    # then: requests take the same time, and their records wait in the broker
    assert statistics.median(stopped) < 1.5 * statistics.median(running) + 0.002, (
        statistics.median(stopped), statistics.median(running))
    time.sleep(1)  # the web process ships its buffer every 0.25 s
    assert UsageRecord.objects.filter(key_prefix=down.prefix).count() == 0

    start_worker(queues=settings.OPENCLAW_LOG_QUEUE)
    assert records(down.prefix, REQUESTS) == REQUESTS
    time.sleep(0.5)
    assert UsageRecord.objects.filter(key_prefix=down.prefix).count() == REQUESTS
