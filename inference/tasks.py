"""Celery tasks of the inference app: thin, they take ids and call services."""

from __future__ import annotations

import logging
import os
import socket
import time

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from core.metrics import start_worker_server

from . import services
from .pool import get_pool

logger = logging.getLogger(__name__)


@shared_task(name="inference.ping")
def ping(sent_at: float) -> dict:
    """Answer with who ran the task: the readiness round trip and worker checks."""
    return {"pid": os.getpid(), "hostname": socket.gethostname(),
            "sent_at": sent_at, "received_at": time.time()}


@shared_task(name="inference.generate", ignore_result=True, acks_late=False)
def generate(config: dict, request: dict, reply_channel: str,
             language: str | None = None) -> None:
    """Stream one generation back to the caller on ``reply_channel``.

    ``config`` is the endpoint as the caller just read it from the registry
    (no secrets), so an admin edit applies from the next request on. Acked on
    receipt, not retried: a caller whose worker died has been told so and has
    moved on. ``language`` is the caller's (one of ``LANGUAGES``; anything else, or
    None from a caller before it was sent, is the default): the errors the engine
    raises here are read by that caller.
    """
    if language not in dict(settings.LANGUAGES):
        language = None
    services.run_generation(config, request, reply_channel, language)


@shared_task(name="inference.pool_status")
def pool_status() -> dict:
    """What this worker's engine pool holds: endpoint id -> engine kind."""
    return {"pid": os.getpid(), "hostname": socket.gethostname(),
            "loaded": {str(k): v for k, v in get_pool().loaded().items()}}


@worker_ready.connect
def serve_metrics(sender, **kwargs) -> None:
    """This worker's own metrics on ``OPENCLAW_WORKER_METRICS_PORT`` (0: off)."""
    if settings.OPENCLAW_WORKER_METRICS_PORT:
        start_worker_server(settings.OPENCLAW_WORKER_METRICS_PORT,
                            settings.OPENCLAW_WORKER_METRICS_ADDR)
