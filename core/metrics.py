"""Prometheus metrics: every metric OpenClaw exports, the helpers that record them,
the collectors read at scrape time and the exposition (the ``/metrics`` view is the
shell's, ``openclaw_site.views``).

Three layers, as operators expect them:

- infrastructure — ``process_*`` (CPU, memory, open fds: prometheus_client's process
  collector), ``openclaw_process_disk_*`` (this process's disk I/O),
  ``openclaw_data_dir_*`` (the data folder's file system) and ``openclaw_gpu_*``
  (NVML, when ``pynvml`` and an NVIDIA driver are present);
- service — ``openclaw_http_*`` (the ``/v1`` API: requests by route, method and status,
  latency per route), ``openclaw_websocket_connections``, and django-prometheus's
  ``django_http_*`` for every other Django view;
- model — ``openclaw_inference_*``, ``openclaw_time_to_first_token_seconds``,
  ``openclaw_tokens_total``, ``openclaw_generation_tokens_per_second``,
  ``openclaw_queue_depth``, ``openclaw_fallbacks_total``, ``openclaw_circuit_state``,
  ``openclaw_response_cache_lookups_total``, ``openclaw_overhead_seconds``.

Labels are model names, endpoint ids, routes, queue names and error codes: all bounded
by the registry and the code, never a user, a key secret or a prompt.

Recording helpers are cheap (a dict look-up and a lock per call) and never raise into
the request. Values that describe shared state — queue depth, circuits, instance
health, key budgets — are read when ``/metrics`` is scraped (``StateCollector``), so
every replica reports the same truth, however many processes changed it.

Workers serve their own metrics (``inference.*`` and the infrastructure layer) on
``OPENCLAW_WORKER_METRICS_PORT`` (``start_worker_server``): one scrape target per
worker, which is what a worker on another machine or container needs anyway.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator

import psutil
from celery import current_app
from django.conf import settings
from django.http import HttpRequest
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .client_ip import request_client_ip

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
                   60.0, 120.0, 300.0)
# OpenClaw's own time per request is meant to stay in the low milliseconds.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 1.0)
TOKENS_PER_SECOND_BUCKETS = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
LOAD_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}


# --- service ----------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "openclaw_http_requests", "API requests answered, by route, method and status code.",
    ["route", "method", "status"])
HTTP_LATENCY = Histogram(
    "openclaw_http_request_duration_seconds",
    "Seconds from an API request's arrival until its response starts (for a stream: "
    "after its first token).", ["route"], buckets=LATENCY_BUCKETS)
OVERHEAD = Histogram(
    "openclaw_overhead_seconds",
    "Seconds an API request spent in OpenClaw itself (total minus time inside engines).",
    ["route"], buckets=OVERHEAD_BUCKETS)
WEBSOCKETS = Gauge(
    "openclaw_websocket_connections", "Open websocket connections, by consumer.",
    ["consumer"])

# --- model ------------------------------------------------------------------------

INFERENCE_LATENCY = Histogram(
    "openclaw_inference_duration_seconds",
    "Seconds one engine call took, from dispatch to its last token.",
    ["model", "endpoint"], buckets=LATENCY_BUCKETS)
TTFT = Histogram(
    "openclaw_time_to_first_token_seconds",
    "Seconds from dispatching a streamed engine call to its first token.",
    ["model", "endpoint"], buckets=LATENCY_BUCKETS)
TOKENS = Counter(
    "openclaw_tokens", "Tokens sent to (prompt) and produced by (completion) models.",
    ["model", "kind"])
TOKENS_PER_SECOND = Histogram(
    "openclaw_generation_tokens_per_second",
    "Completion tokens per second of one streamed call, after its first token.",
    ["model"], buckets=TOKENS_PER_SECOND_BUCKETS)
INFERENCE_ERRORS = Counter(
    "openclaw_inference_errors", "Failed engine calls, by model and error code.",
    ["model", "code"])
FALLBACKS = Counter(
    "openclaw_fallbacks",
    "Requests moved on from a model instance to the next one after a failure, by the "
    "model that failed and why.", ["model", "reason"])
CIRCUIT_TRANSITIONS = Counter(
    "openclaw_circuit_transitions",
    "Circuit breaker state changes seen by this process (state: open or closed).",
    ["model", "endpoint", "state"])
CACHE_LOOKUPS = Counter(
    "openclaw_response_cache_lookups",
    "Response cache look-ups of cacheable requests, by result (hit or miss).", ["result"])

# --- worker -----------------------------------------------------------------------

WORKER_GENERATIONS = Counter(
    "openclaw_worker_generations",
    "Generations a worker ran, by model and outcome (ok or error).", ["model", "outcome"])
WORKER_GENERATION_SECONDS = Histogram(
    "openclaw_worker_generation_duration_seconds",
    "Seconds a worker spent on one generation.", ["model"], buckets=LATENCY_BUCKETS)
WORKER_INFLIGHT = Gauge(
    "openclaw_worker_inflight_generations", "Generations running in this worker now.",
    ["model"])
ENGINE_LOAD_SECONDS = Histogram(
    "openclaw_engine_load_duration_seconds", "Seconds to load an engine (weights, warm-up).",
    ["model", "engine"], buckets=LOAD_BUCKETS)


# --- recording helpers --------------------------------------------------------------


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """One API request answered. ``route`` is the URL pattern (``/v1/chat/completions``),
    never the raw path; ``seconds`` runs until the response starts."""
    HTTP_REQUESTS.labels(route, method, str(status)).inc()
    HTTP_LATENCY.labels(route).observe(seconds)


def observe_overhead(route: str, seconds: float) -> None:
    """OpenClaw's own time in one request (``GatewayMeta.overhead_ms() / 1000``)."""
    OVERHEAD.labels(route).observe(seconds)


def websocket_opened(consumer: str) -> None:
    WEBSOCKETS.labels(consumer).inc()


def websocket_closed(consumer: str) -> None:
    WEBSOCKETS.labels(consumer).dec()


@contextlib.contextmanager
def websocket_connection(consumer: str) -> Iterator[None]:
    """Count a websocket connection for the duration of the block."""
    websocket_opened(consumer)
    try:
        yield
    finally:
        websocket_closed(consumer)


def observe_generation(model: str, endpoint: int | None, seconds: float,
                       first_token_s: float | None = None, prompt_tokens: int = 0,
                       completion_tokens: int = 0) -> None:
    """One successful engine call: its latency, time to first token (streams), tokens
    and, for streams, tokens per second after the first token."""
    endpoint_label = str(endpoint)
    INFERENCE_LATENCY.labels(model, endpoint_label).observe(seconds)
    if prompt_tokens:
        TOKENS.labels(model, "prompt").inc(prompt_tokens)
    if completion_tokens:
        TOKENS.labels(model, "completion").inc(completion_tokens)
    if first_token_s is None:
        return
    TTFT.labels(model, endpoint_label).observe(first_token_s)
    generating = seconds - first_token_s
    if completion_tokens > 1 and generating > 0:
        TOKENS_PER_SECOND.labels(model).observe((completion_tokens - 1) / generating)


def observe_stream(model: str, endpoint: int | None, started: float,
                   first_token_s: float | None, usage: object | None, tokens: int) -> None:
    """A streamed engine call that ended well: ``started`` is its ``perf_counter()``
    start, ``usage`` the last delta's ``Usage`` if the backend sent one, else
    ``tokens`` (counted from the deltas) stands for the completion tokens."""
    observe_generation(model, endpoint, time.perf_counter() - started, first_token_s,
                       getattr(usage, "prompt_tokens", 0),
                       getattr(usage, "completion_tokens", 0) or tokens)


def inference_failed(model: str, code: str) -> None:
    INFERENCE_ERRORS.labels(model, code or "error").inc()


def fallback(model: str, reason: str) -> None:
    """The request leaves ``model``'s instance for the next candidate after ``reason``."""
    FALLBACKS.labels(model, reason or "error").inc()


def circuit_changed(model: str, endpoint: int, state: str) -> None:
    CIRCUIT_TRANSITIONS.labels(model, str(endpoint), state).inc()


def cache_lookup(hit: bool) -> None:
    CACHE_LOOKUPS.labels("hit" if hit else "miss").inc()


def observe_engine_load(model: str, engine: str, seconds: float) -> None:
    ENGINE_LOAD_SECONDS.labels(model, engine).observe(seconds)


@contextlib.contextmanager
def worker_generation(model: str) -> Iterator[None]:
    """Time one generation in a worker and count it by outcome."""
    WORKER_INFLIGHT.labels(model).inc()
    started, outcome = time.perf_counter(), "error"
    try:
        yield
        outcome = "ok"
    finally:
        WORKER_INFLIGHT.labels(model).dec()
        WORKER_GENERATION_SECONDS.labels(model).observe(time.perf_counter() - started)
        WORKER_GENERATIONS.labels(model, outcome).inc()


# --- infrastructure, read at scrape time ----------------------------------------------


class SystemCollector(Collector):
    """This process's disk I/O, the data folder's file system and, where NVML works,
    each GPU's utilisation and memory."""

    def __init__(self) -> None:
        self._nvml: object | None = None
        self._nvml_failed = False

    def collect(self) -> Iterable[Metric]:
        yield from self._disk_io()
        yield from self._data_dir()
        yield from self._gpus()

    def _disk_io(self) -> Iterable[Metric]:
        try:
            io = psutil.Process().io_counters()
        except (psutil.Error, AttributeError, OSError):  # no /proc/self/io here
            return
        yield CounterMetricFamily("openclaw_process_disk_read_bytes",
                                  "Bytes this process read from storage.", io.read_bytes)
        yield CounterMetricFamily("openclaw_process_disk_written_bytes",
                                  "Bytes this process wrote to storage.", io.write_bytes)

    def _data_dir(self) -> Iterable[Metric]:
        try:
            usage = psutil.disk_usage(str(settings.DATA_DIR))
        except OSError:
            return
        yield GaugeMetricFamily("openclaw_data_dir_free_bytes",
                                "Free bytes on the data folder's file system.", usage.free)
        yield GaugeMetricFamily("openclaw_data_dir_size_bytes",
                                "Size of the data folder's file system.", usage.total)

    def _gpus(self) -> Iterable[Metric]:
        nvml = self._load_nvml()
        if nvml is None:
            return
        util = GaugeMetricFamily("openclaw_gpu_utilization_ratio",
                                 "GPU busy fraction over the last sample period (NVML).",
                                 labels=["gpu"])
        used = GaugeMetricFamily("openclaw_gpu_memory_used_bytes", "GPU memory in use (NVML).",
                                 labels=["gpu"])
        total = GaugeMetricFamily("openclaw_gpu_memory_total_bytes", "GPU memory (NVML).",
                                  labels=["gpu"])
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                util.add_metric([str(index)], rates.gpu / 100)
                used.add_metric([str(index)], memory.used)
                total.add_metric([str(index)], memory.total)
        except nvml.NVMLError as exc:
            logger.warning("reading GPUs through NVML failed: %s", exc)
            return
        yield from (util, used, total)

    def _load_nvml(self):
        """``pynvml`` initialised once, or None without it or without a driver."""
        if self._nvml is not None or self._nvml_failed:
            return self._nvml
        try:
            import pynvml  # optional (the gpu extra): imported only where GPUs are looked for

            pynvml.nvmlInit()
        except Exception:  # no package, no driver, no GPU: the GPU metrics are absent
            self._nvml_failed = True
            return None
        self._nvml = pynvml
        return pynvml


# --- shared state, read when the web /metrics is scraped ---------------------------------

StateReader = Callable[[], Iterable[Metric]]
_state_parts: dict[str, StateReader] = {}


def register_state(part: str, read: StateReader) -> None:
    """Add a part of the shared state to every web ``/metrics`` scrape (the apps register
    theirs in ``AppConfig.ready()``: routing the circuits and key budgets)."""
    _state_parts[part] = read


class StateCollector(Collector):
    """The registered parts of the shared state — queue depth per Celery queue (from the
    broker) here, the model instances' circuits and health and the keys' budgets from
    ``routing`` — read when scraped.

    A part that fails (broker or database away) is left out of that scrape and
    ``openclaw_state_up{part}`` says 0, so a dashboard shows a gap, not a stale value."""

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("openclaw_state_up",
                               "1 when this part of the shared state could be read.",
                               labels=["part"])
        for part, read in list(_state_parts.items()):
            try:
                metrics = list(read())
            except Exception as exc:
                logger.warning("metrics: reading %s failed: %s", part, exc)
                up.add_metric([part], 0)
                continue
            up.add_metric([part], 1)
            yield from metrics
        yield up


def queue_metrics() -> Iterable[Metric]:
    depth = GaugeMetricFamily("openclaw_queue_depth",
                              "Tasks waiting in each Celery queue (read from the broker).",
                              labels=["queue"])
    for queue, count in queue_depths(settings.OPENCLAW_METRICS_QUEUES).items():
        depth.add_metric([queue], count)
    yield depth


def queue_depths(queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each queue, asked of the broker (Redis: the lengths of the
    queue's lists, one per priority; AMQP: a passive declare)."""
    depths: dict[str, int] = {}
    with current_app.connection_for_read() as connection:
        channel = connection.default_channel
        for queue in queues:
            try:
                # Every transport's channel has queue_declare; kombu's StdChannel stub lacks it.
                declared = channel.queue_declare(  # type: ignore[attr-defined]  # stub lacks it
                    queue=queue, passive=True)
                depths[queue] = declared.message_count
            except connection.channel_errors:  # never declared, or empty and so gone (Redis)
                depths[queue] = 0
                if connection.transport.driver_type == "amqp":
                    channel = connection.channel()  # AMQP closes a channel on NOT_FOUND
    return depths


REGISTRY.register(SystemCollector())
_state_registry = CollectorRegistry(auto_describe=False)
_state_registry.register(StateCollector())
register_state("queues", queue_metrics)
# A callback gauge (no labels, read at scrape time); ``inference`` sets its function.
ENGINES_LOADED = Gauge("openclaw_worker_engines_loaded", "Engines loaded in this worker's pool.")


# --- exposition -----------------------------------------------------------------------


def exposition(include_state: bool = True) -> bytes:
    """The text exposition of this process's metrics (and the shared state)."""
    output = generate_latest(REGISTRY)
    if include_state:
        output += generate_latest(_state_registry)
    return output


def access_allowed(request: HttpRequest) -> bool:
    """``OPENCLAW_METRICS_TOKEN`` (``Authorization: Bearer …``) or a client address in
    ``OPENCLAW_METRICS_ALLOW_CIDRS``; with neither configured, anyone may read."""
    token = settings.OPENCLAW_METRICS_TOKEN
    networks = settings.OPENCLAW_METRICS_ALLOW_CIDRS
    if not token and not networks:
        return True
    if token:
        scheme, _sep, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                               token.encode()):
            return True
    try:
        address = ipaddress.ip_address(request_client_ip(request))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in networks)


# --- workers ------------------------------------------------------------------------------

_worker_server = None


def start_worker_server(port: int, address: str = "127.0.0.1") -> bool:
    """Serve this worker's metrics over HTTP (prometheus_client's server in a thread);
    False, with a warning, when the port cannot be bound: a worker without metrics is
    better than no worker."""
    global _worker_server
    if _worker_server is not None:
        return True
    try:
        _worker_server = start_http_server(port, addr=address)
    except OSError as exc:
        logger.warning("worker metrics: cannot listen on %s:%s (%s); metrics are off",
                       address, port, exc.strerror)
        return False
    logger.info("worker metrics on http://%s:%s/metrics (pid %s)", address, port, os.getpid())
    return True
