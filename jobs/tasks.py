"""Celery tasks of the jobs: thin, they take ids and call ``jobs.batch`` and
``jobs.finetune``.

A worker that dies loses nothing and holds nothing up for long: the work it ran is
claimed with a lease its run renews (``jobs.liveness``), and beat's watchdog
(``resume_stalled``, every ``OPENCLAW_JOB_RESUME_TICK_S``) queues again what no live
run holds — within a lease and a tick of the death, not after the broker's visibility
timeout. Tasks are still acknowledged only after they ran (``acks_late``); the
broker's redelivery, an hour later, then finds nothing left to do.

Batch chunks (queue ``batch``): a chunk task runs its chunk's lines nobody holds, then
the job's other free chunks; each line is answered, written and counted once.

Fine-tuning (queue ``cpu`` or ``gpu``, the job's choice): a job whose worker died trains
again from the start under a new task id; a task whose id the job no longer names is
skipped, and a job cancelled while queued too.
"""

from __future__ import annotations

from celery import Task, shared_task

from . import batch, batch_watchdog, finetune


@shared_task(name="jobs.batch_start", ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def start_batch(job_id: str) -> None:
    """Validate a job's input and queue its chunks."""
    batch.start_job(job_id)


@shared_task(name="jobs.batch_chunk", ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def run_batch_chunk(job_id: str, chunk: int) -> None:
    """Run one chunk's free lines, then the job's other free chunks; the run that ends
    the job writes the result files."""
    batch.run_chunks(job_id, chunk)


@shared_task(name="jobs.finetune", bind=True, ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def run_finetune(self: Task, job_id: int) -> None:
    """Train one fine-tuning job to its end (succeeded, failed or cancelled)."""
    finetune.run_job(job_id, task_id=self.request.id)


@shared_task(name="jobs.resume_stalled", ignore_result=True)
def resume_stalled() -> None:
    """Beat's watchdog: queue again the work of jobs whose worker stopped renewing its
    claim (a new kind of job adds its own ``resume_stalled`` here)."""
    batch_watchdog.resume_stalled()
    finetune.resume_stalled()
