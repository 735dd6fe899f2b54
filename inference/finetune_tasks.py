"""Celery task of fine-tuning jobs (queue ``cpu`` or ``gpu``, the job's choice): thin,
it takes the job id and calls ``inference.finetune``.

Acknowledged after it ran and given back when its worker dies, so a killed worker's
job trains again elsewhere (``run_job`` starts it over); a job cancelled while queued
is skipped. Keep ``OPENCLAW_BROKER_VISIBILITY_TIMEOUT_S`` above the longest training.
"""

from __future__ import annotations

from celery import shared_task

from . import finetune


@shared_task(name="inference.finetune", ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def run_finetune(job_id: int) -> None:
    """Train one fine-tuning job to its end (succeeded, failed or cancelled)."""
    finetune.run_job(job_id)
