"""Celery tasks of the routing app (thin: they call services)."""

from __future__ import annotations

import logging

from celery import shared_task

from . import key_services

logger = logging.getLogger(__name__)


@shared_task(name="routing.rotate_due_keys", ignore_result=True)
def rotate_due_keys() -> int:
    """Beat, every few minutes: issue successors for keys whose rotation is due."""
    issued = key_services.rotate_due_keys()
    if issued:
        logger.info("rotated %d API key(s): successors %s", len(issued), ", ".join(issued))
    return len(issued)
