"""Celery tasks of the chat app: thin, they take ids and call services."""

from __future__ import annotations

import logging

from celery import shared_task

from . import memory
from .tools import tasks as tool_tasks  # noqa: F401  (the MCP stdio tasks: Celery finds chat.tasks)
from .workflows import schedule

logger = logging.getLogger(__name__)


@shared_task(name="chat.remember_messages", ignore_result=True, acks_late=True)
def remember_messages(message_ids: list[int]) -> int:
    """After a turn (or an import): embed what is worth keeping into long-term memory.
    Acked late: a worker that dies mid-task leaves it to the next one (re-running it
    adds nothing twice: near-duplicates are skipped)."""
    kept = memory.remember_messages(message_ids)
    logger.info("remembered %d of messages %s", len(kept), message_ids)
    return len(kept)


@shared_task(name="chat.run_due_schedules", ignore_result=True)
def run_due_schedules() -> int:
    """Beat, every ``OPENCLAW_SCHEDULE_TICK_S``: hand the due workflow schedules out."""
    return len(schedule.hand_out_due())


@shared_task(name="chat.run_scheduled_workflow", ignore_result=True)
def run_scheduled_workflow(schedule_id: int) -> str:
    """One run of a scheduled workflow; the outcome is recorded on the schedule."""
    status = schedule.run_schedule(schedule_id)
    logger.info("scheduled workflow %s: %s", schedule_id, status)
    return status
