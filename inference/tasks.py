"""Celery tasks of the inference app: thin, they take ids and call services."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down
from django.conf import settings

from . import batch_tasks, finetune_tasks, services  # noqa: F401 - registers their tasks

logger = logging.getLogger(__name__)


@shared_task(name="inference.ping")
def ping(sent_at: float) -> dict:
    """Answer with who ran the task: the readiness round trip and worker checks."""
    return {"pid": os.getpid(), "hostname": socket.gethostname(),
            "sent_at": sent_at, "received_at": time.time()}


@shared_task(name="inference.generate", ignore_result=True, acks_late=False)
def generate(config: dict, request: dict, reply_channel: str) -> None:
    """Stream one generation back to the caller on ``reply_channel``.

    ``config`` is the endpoint as the caller just read it from the registry
    (no secrets), so an admin edit applies from the next request on. Acked on
    receipt, not retried: a caller whose worker died has been told so and has
    moved on.
    """
    services.run_generation(config, request, reply_channel)


@shared_task(name="inference.pool_status")
def pool_status() -> dict:
    """What this worker's engine pool holds: endpoint id -> engine kind."""
    from .pool import get_pool

    return {"pid": os.getpid(), "hostname": socket.gethostname(),
            "loaded": {str(k): v for k, v in get_pool().loaded().items()}}


_stop = threading.Event()


@worker_ready.connect
def start_reconciler(sender, **kwargs) -> None:
    """Warm up at start, then keep the engine pool in step with the registry."""
    queues = {queue.name for queue in sender.task_consumer.queues}
    if not queues & {"cpu", "gpu"}:
        return

    def loop() -> None:
        while not _stop.is_set():
            try:
                services.reconcile_pool(queues)
            except Exception:  # the database may be briefly away; try again
                logger.exception("engine pool reconcile failed")
            finally:
                from django.db import connection

                connection.close()
            _stop.wait(settings.ENGINE_POOL_RECONCILE_S)

    threading.Thread(target=loop, name="engine-pool-reconcile", daemon=True).start()


@worker_ready.connect
def serve_metrics(sender, **kwargs) -> None:
    """This worker's own metrics on ``OPENCLAW_WORKER_METRICS_PORT`` (0: off)."""
    if settings.OPENCLAW_WORKER_METRICS_PORT:
        from openclaw_site.metrics import start_worker_server

        start_worker_server(settings.OPENCLAW_WORKER_METRICS_PORT,
                            settings.OPENCLAW_WORKER_METRICS_ADDR)


@worker_shutting_down.connect
def stop_reconciler(**kwargs) -> None:
    _stop.set()
