"""Celery tasks and worker hooks of the routing app (thin: they call services).

The usage and audit writers (``routing.write_usage`` / ``routing.write_audit``) live
with their buffers in ``routing.usage``; this module imports them so that the worker
registers them with the rest.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down
from django.conf import settings
from django.db import connection

from inference.services import reconcile_pool

from . import keys
from .models import ModelEndpoint
from .services import endpoint_config
from .usage import write_audit, write_usage  # noqa: F401  (registered with the worker)

logger = logging.getLogger(__name__)


@shared_task(name="routing.rotate_due_keys", ignore_result=True)
def rotate_due_keys() -> int:
    """Beat, every few minutes: issue successors for keys whose rotation is due."""
    issued = keys.rotate_due_keys()
    if issued:
        logger.info("rotated %d API key(s): successors %s", len(issued), ", ".join(issued))
    return len(issued)


# --- a local-engine worker's pool, kept in step with the registry ----------------------

_stop = threading.Event()


def reconcile(queues: set[str]) -> None:
    """Hand this worker's engine pool the enabled endpoints (with their warm flag)."""
    reconcile_pool(((endpoint_config(e), e.warm)
                    for e in ModelEndpoint.objects.filter(enabled=True)), queues)


@worker_ready.connect
def start_reconciler(sender: Any, **kwargs: Any) -> None:
    """Warm up at start, then keep the engine pool in step with the registry."""
    queues = {queue.name for queue in sender.task_consumer.queues}
    if not queues & {"cpu", "gpu"}:
        return

    def loop() -> None:
        while not _stop.is_set():
            try:
                reconcile(queues)
            except Exception:  # the database may be briefly away; try again
                logger.exception("engine pool reconcile failed")
            finally:
                connection.close()
            _stop.wait(settings.ENGINE_POOL_RECONCILE_S)

    threading.Thread(target=loop, name="engine-pool-reconcile", daemon=True).start()


@worker_shutting_down.connect
def stop_reconciler(**kwargs: Any) -> None:
    _stop.set()
