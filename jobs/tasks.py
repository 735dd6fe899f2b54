"""Celery tasks of the jobs: thin, they take ids and call ``jobs.batch`` and
``jobs.finetune``.

Batch chunks (queue ``batch``) are acknowledged only after they ran (``acks_late``)
and given back to the broker when their worker dies (``reject_on_worker_lost``); a
chunk that runs again writes only the lines still pending, so a crash loses and
duplicates nothing.

Fine-tuning (queue ``cpu`` or ``gpu``, the job's choice) is acknowledged likewise, so
a killed worker's job trains again elsewhere (``run_job`` starts it over); a job
cancelled while queued is skipped. Keep ``OPENCLAW_BROKER_VISIBILITY_TIMEOUT_S`` above
the longest training.
"""

from __future__ import annotations

from celery import shared_task

from . import batch, finetune


@shared_task(name="jobs.batch_start", ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def start_batch(job_id: str) -> None:
    """Validate a job's input and queue its chunks."""
    batch.start_job(job_id)


@shared_task(name="jobs.batch_chunk", ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def run_batch_chunk(job_id: str, chunk: int) -> None:
    """Run one chunk's pending lines; the last chunk to end writes the result files."""
    batch.run_chunk(job_id, chunk)


@shared_task(name="jobs.finetune", ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def run_finetune(job_id: int) -> None:
    """Train one fine-tuning job to its end (succeeded, failed or cancelled)."""
    finetune.run_job(job_id)
