"""Scheduled workflow runs: ``WorkflowSchedule`` rows (a cron expression or an
interval in seconds) read by the ``chat.run_due_schedules`` task that Celery beat
ticks every ``OPENCLAW_SCHEDULE_TICK_S``. Each due schedule moves its ``next_run_at``
on (missed runs are not caught up) and is handed to a worker, which admits the run for
the schedule's user (their quota; ``chat.run_admission``), runs the workflow as one turn
of theirs and records the outcome on the row."""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import datetime, timedelta

from celery import current_app
from croniter import croniter
from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import Q
from django.utils import timezone

from routing.keys import KeyRefused

from ..graph.checkpointer import close_saver
from ..graph.service import arun_turn
from ..models import WorkflowSchedule
from ..run_admission import admit_run

logger = logging.getLogger(__name__)

RUN_TASK = "chat.run_scheduled_workflow"  # chat.tasks.run_scheduled_workflow


def next_run(schedule: WorkflowSchedule, after: datetime) -> datetime:
    if schedule.every_seconds:
        return after + timedelta(seconds=schedule.every_seconds)
    return croniter(schedule.cron, after).get_next(datetime)


def _send_run(schedule_id: int) -> None:
    """Hand one run of the schedule to a worker (once the transaction commits)."""
    current_app.send_task(RUN_TASK, [schedule_id], queue=settings.OPENCLAW_SCHEDULE_QUEUE)


def hand_out_due(now: datetime | None = None) -> list[int]:
    """Move every due schedule's next run on and enqueue its run once committed; a
    schedule seen for the first time is only given its first run time."""
    now = now or timezone.now()
    due: list[int] = []
    with transaction.atomic():
        rows = (WorkflowSchedule.objects.select_for_update(skip_locked=True)
                .filter(enabled=True, workflow__enabled=True)
                .filter(Q(next_run_at__lte=now) | Q(next_run_at__isnull=True)))
        for schedule in rows:
            if schedule.next_run_at is not None:
                due.append(schedule.pk)
            schedule.next_run_at = next_run(schedule, now)
            schedule.save(update_fields=["next_run_at"])
        for schedule_id in due:
            transaction.on_commit(functools.partial(_send_run, schedule_id))
    return due


def run_schedule(schedule_id: int) -> str:
    """One run of a schedule's workflow (in a worker): its status, recorded on the row."""
    schedule = (WorkflowSchedule.objects.select_related("workflow")
                .filter(pk=schedule_id).first())
    if schedule is None:
        return "missing"
    model = schedule.model or schedule.workflow.default_model
    try:
        ticket = admit_run(schedule.user, schedule.content, model=schedule.model or None,
                           workflow=schedule.workflow.slug,
                           own_model=schedule.workflow.default_model)
    except KeyRefused as exc:
        return _record(schedule_id, {"type": "error", "message": exc.message})

    async def run() -> dict:
        try:
            return await arun_turn(
                conversation_id=str(schedule.conversation_id) if schedule.conversation_id
                else None, user=schedule.user, content=schedule.content, model=model,
                workflow=schedule.workflow.slug)
        finally:
            await close_saver()

    result = asyncio.run(run())
    close_old_connections()
    if ticket is not None:
        ticket.settle(int((result.get("usage") or {}).get("total_tokens") or 0))
    return _record(schedule_id, result)


def _record(schedule_id: int, result: dict) -> str:
    """The run's outcome on its schedule's row; its status."""
    WorkflowSchedule.objects.filter(pk=schedule_id).update(
        last_run_at=timezone.now(), last_status=result.get("type", "error"),
        last_conversation_id=result.get("conversation_id"),
        last_error="" if result.get("type") != "error"
        else str(result.get("message", ""))[:500])
    return result.get("type", "error")
