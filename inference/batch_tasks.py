"""Celery tasks of batch jobs (queue ``batch``): thin, they take ids and call
``inference.batch``.

Chunks are acknowledged only after they ran (``acks_late``) and given back to the
broker when their worker dies (``reject_on_worker_lost``); a chunk that runs again
writes only the lines still pending, so a crash loses and duplicates nothing.
"""

from __future__ import annotations

from celery import shared_task

from . import batch


@shared_task(name="inference.batch_start", ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def start_batch(job_id: str) -> None:
    """Validate a job's input and queue its chunks."""
    batch.start_job(job_id)


@shared_task(name="inference.batch_chunk", ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def run_batch_chunk(job_id: str, chunk: int) -> None:
    """Run one chunk's pending lines; the last chunk to end writes the result files."""
    batch.run_chunk(job_id, chunk)
