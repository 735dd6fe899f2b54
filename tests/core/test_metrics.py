"""/metrics as Prometheus reads it: real /v1 calls through the gateway to the loopback
OpenAI server, the real broker, breaker and key counters, a real worker process; the
exposition parsed with prometheus_client's own parser."""

from __future__ import annotations

import json
import socket
import urllib.request
import uuid

import pytest
from django.test import AsyncClient, Client
from prometheus_client.parser import text_string_to_metric_families

from core import metrics
from inference.errors import ConnectionFailed
from openclaw_site.celery import app
from routing.breaker import Breaker
from routing.keys import create_key
from routing.limits import record_usage
from routing.models import ModelEndpoint, RoutingRule
from tests.stand_ins.nvml import GIB, FakeNvml

pytestmark = pytest.mark.django_db(transaction=True)
HELLO = [{"role": "user", "content": "hello there"}]

# Every family the operations issue names, as exported (counters without "_total").
FAMILIES = {
    # infrastructure
    "process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds",
    "openclaw_process_disk_read_bytes", "openclaw_process_disk_written_bytes",
    "openclaw_data_dir_free_bytes",
    # service
    "openclaw_http_requests", "openclaw_http_request_duration_seconds",
    "openclaw_websocket_connections", "django_http_requests_latency_seconds_by_view_method",
    # model
    "openclaw_inference_duration_seconds", "openclaw_time_to_first_token_seconds",
    "openclaw_tokens", "openclaw_generation_tokens_per_second", "openclaw_queue_depth",
    "openclaw_fallbacks", "openclaw_circuit_state", "openclaw_model_instance_up",
    "openclaw_response_cache_lookups", "openclaw_overhead_seconds",
    "openclaw_api_key_budget_used_ratio",
}


def scrape(client: Client | None = None, **headers) -> dict[str, list]:
    """GET /metrics; {family name: its samples}."""
    response = (client or Client()).get("/metrics", headers=headers)
    assert response.status_code == 200, response.content[:300]
    return families(response.content.decode())


def families(text: str) -> dict[str, list]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    found = [s.value for s in samples
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert found, f"no sample {name}{labels}"
    return sum(found)


def chat(model: str, stream: bool, secret: str) -> None:
    async def call() -> None:
        response = await AsyncClient().post(
            "/v1/chat/completions", content_type="application/json",
            data=json.dumps({"model": model, "messages": HELLO, "stream": stream,
                             "stream_options": {"include_usage": True}}),
            headers={"Authorization": f"Bearer {secret}"})
        assert response.status_code == 200
        if stream:
            body = b"".join([chunk async for chunk in response.streaming_content])
            assert b"[DONE]" in body

    import asyncio

    asyncio.run(call())


def test_v1_calls_fill_the_model_families_per_model_and_instance(openai_server):
    # given
    backup = ModelEndpoint.objects.create(name="m-backup", engine="openai",
                                          endpoint_url=openai_server.url,
                                          upstream_model="tokens-6")
    secret = create_key("metrics")[1]

    # when: one streamed and one whole answer through /v1
    chat("m-backup", stream=True, secret=secret)
    chat("m-backup", stream=False, secret=secret)
    after = scrape()

    # then: latency, TTFT, tokens and tokens/s per model and instance
    labels = {"model": "m-backup", "endpoint": str(backup.pk)}
    assert value(after["openclaw_inference_duration_seconds"],
                 "openclaw_inference_duration_seconds_count", **labels) == 2
    assert value(after["openclaw_time_to_first_token_seconds"],
                 "openclaw_time_to_first_token_seconds_count", **labels) == 1
    assert value(after["openclaw_tokens"], "openclaw_tokens_total", model="m-backup",
                 kind="completion") == 12
    assert value(after["openclaw_tokens"], "openclaw_tokens_total", model="m-backup",
                 kind="prompt") == 4
    assert value(after["openclaw_generation_tokens_per_second"],
                 "openclaw_generation_tokens_per_second_count", model="m-backup") == 1
    # and the shared state: this instance is up with its circuit closed
    assert value(after["openclaw_circuit_state"], "openclaw_circuit_state", **labels) == 0
    assert value(after["openclaw_model_instance_up"], "openclaw_model_instance_up",
                 **labels) == 1


def test_a_failed_call_counts_the_error_and_the_fallback(openai_server):
    RoutingRule.objects.create(name="Metrics fallback", priority=10,
                               condition={"field": "model", "op": "eq", "value": "f-primary"},
                               target_model="f-primary", fallbacks=["f-backup"])
    ModelEndpoint.objects.create(name="f-primary", engine="openai",
                                 endpoint_url=openai_server.url, upstream_model="error-500")
    ModelEndpoint.objects.create(name="f-backup", engine="openai",
                                 endpoint_url=openai_server.url, upstream_model="echo")
    secret = create_key("metrics")[1]
    before = scrape()

    chat("f-primary", stream=False, secret=secret)
    after = scrape()

    def fallbacks(samples: dict) -> float:
        return sum(s.value for s in samples.get("openclaw_fallbacks", [])
                   if s.name == "openclaw_fallbacks_total" and s.labels["model"] == "f-primary")

    assert fallbacks(after) - fallbacks(before) == 1
    assert value(after["openclaw_inference_errors"], "openclaw_inference_errors_total",
                 model="f-primary") >= 1


def test_every_named_family_is_exported_with_samples(openai_server):
    # given: the /v1 view and the studio record through these helpers
    metrics.observe_request("/v1/chat/completions", "POST", 200, 0.012)
    metrics.observe_overhead("/v1/chat/completions", 0.0004)
    metrics.cache_lookup(hit=True)
    with metrics.websocket_connection("studio"):
        ModelEndpoint.objects.create(name="fam", engine="openai",
                                     endpoint_url=openai_server.url, upstream_model="echo")
        key, secret = create_key("budget", token_budget=1000)
        chat("fam", stream=True, secret=secret)
        record_usage(key, 100)
        metrics.fallback("fam", "server_error")

        # when
        found = scrape()

    # then
    missing = FAMILIES - set(found)
    assert not missing, f"not exported: {sorted(missing)}"
    # a closed circuit reads 0: that family needs a sample, not a non-zero one
    empty = {name for name in FAMILIES - {"openclaw_circuit_state"}
             if not any(s.value for s in found[name])}
    assert not empty, f"exported without a non-zero sample: {sorted(empty)}"
    assert value(found["openclaw_circuit_state"], "openclaw_circuit_state", model="fam") == 0
    assert value(found["openclaw_websocket_connections"], "openclaw_websocket_connections",
                 consumer="studio") == 1
    assert {s.labels["part"]: s.value for s in found["openclaw_state_up"]} == {
        "queues": 1, "models": 1, "budgets": 1}


def test_queue_depth_is_read_from_the_broker(settings):
    # given three tasks waiting in a queue nobody consumes
    queue = f"metrics-{uuid.uuid4().hex[:8]}"
    settings.OPENCLAW_METRICS_QUEUES = [queue, "never-used"]
    for _ in range(3):
        app.send_task("inference.ping", args=[0], queue=queue)
    try:
        # when
        found = scrape()
    finally:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_purge(queue)

    # then
    assert value(found["openclaw_queue_depth"], "openclaw_queue_depth", queue=queue) == 3
    assert value(found["openclaw_queue_depth"], "openclaw_queue_depth", queue="never-used") == 0


def test_open_circuit_and_unusable_instance_are_reported(openai_server):
    instance = ModelEndpoint.objects.create(name="c-model", engine="openai",
                                            endpoint_url=openai_server.url,
                                            upstream_model="echo")
    breaker = Breaker(failures=1)
    assert breaker.record_failure(instance.pk, ConnectionFailed("down"), probe=False)
    try:
        found = scrape()
    finally:
        breaker.reset(instance.pk)

    labels = {"model": "c-model", "endpoint": str(instance.pk)}
    assert value(found["openclaw_circuit_state"], "openclaw_circuit_state", **labels) == 2
    assert value(found["openclaw_model_instance_up"], "openclaw_model_instance_up",
                 **labels) == 0


def test_budget_used_ratio_per_budgeted_key():
    key, _secret = create_key("nearly spent", token_budget=200)
    create_key("no budget")
    record_usage(key, 170)

    found = scrape()

    ratios = {s.labels["key"]: s.value for s in found["openclaw_api_key_budget_used_ratio"]}
    assert ratios == {key.family: pytest.approx(0.85)}


def test_metrics_are_refused_without_the_token_or_an_allowed_address(settings):
    settings.OPENCLAW_METRICS_TOKEN = "scrape-secret"
    settings.OPENCLAW_METRICS_ALLOW_CIDRS = ["10.0.0.0/8"]
    client = Client()  # REMOTE_ADDR 127.0.0.1

    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"}
                      ).status_code == 200
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200

    settings.OPENCLAW_METRICS_TOKEN = ""
    settings.OPENCLAW_METRICS_ALLOW_CIDRS = ["127.0.0.0/8", "::1/128"]
    assert client.get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="192.0.2.9").get("/metrics").status_code == 403


def test_gpu_families_are_absent_without_nvml_and_the_scrape_still_works():
    try:
        import pynvml

        pynvml.nvmlInit()
        has_gpu = True
    except Exception:
        has_gpu = False

    found = scrape()

    gpu = {name for name in found if name.startswith("openclaw_gpu_")}
    if has_gpu:
        assert gpu == {"openclaw_gpu_utilization_ratio", "openclaw_gpu_memory_used_bytes",
                       "openclaw_gpu_memory_total_bytes"}
    else:
        assert gpu == set()
    assert "process_cpu_seconds" in found


def test_gpu_utilisation_and_memory_per_gpu_through_nvml():
    # given NVML as pynvml presents it (a stand-in: no GPU on this machine)
    collector = metrics.SystemCollector()
    collector._nvml = FakeNvml()

    # when
    found = {m.name: {s.labels["gpu"]: s.value for s in m.samples}
             for m in collector._gpus()}

    # then
    assert found == {
        "openclaw_gpu_utilization_ratio": {"0": 0.35, "1": 0.85},
        "openclaw_gpu_memory_used_bytes": {"0": 10 * GIB, "1": 20 * GIB},
        "openclaw_gpu_memory_total_bytes": {"0": 80 * GIB, "1": 80 * GIB},
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_worker_serves_its_own_metrics_on_its_port(start_worker):
    port = _free_port()
    worker = start_worker(queues="default", env={"OPENCLAW_WORKER_METRICS_PORT": str(port)})

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        found = families(response.read().decode())

    assert value(found["process_cpu_seconds"], "process_cpu_seconds_total") > 0
    assert "openclaw_worker_engines_loaded" in found
    assert "openclaw_worker_generation_duration_seconds" in found
    assert "openclaw_queue_depth" not in found  # the web tier reports shared state
    assert worker.process.poll() is None
