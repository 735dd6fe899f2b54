"""Beat's watchdog for batch jobs: the work of a run that stopped renewing its lease
(its worker died) is handed to another worker (``jobs.batch`` claims and writes; this
module only queues again)."""

from __future__ import annotations

import logging
from datetime import timedelta
from itertools import groupby

from django.db import transaction
from django.db.models import F, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from . import batch, liveness
from .models import BatchJob, BatchLine, BatchStatus, LineStatus

logger = logging.getLogger(__name__)


def resume_stalled() -> int:
    """Queue again what no live run holds; the number of tasks queued. Beat's watchdog
    task runs it every ``OPENCLAW_JOB_RESUME_TICK_S``:

    - lines whose lease ran out (their run's worker died, or stalled past its lease:
      its late writes are then refused) are given back and their chunks queued again;
    - a job in progress that no run has beaten for two leases and whose lines no run
      holds — its chunk tasks went down with a worker that had fetched them, or wait
      behind other work — gets one chunk task, which takes its other free chunks in
      turn (``run_chunks``); such a job with no line left pending is finished;
    - a job still validating after two leases gets its start task again.

    Whatever it queues twice finds nothing left to do. A job whose row is locked (being
    started or finished) is left for the next tick."""
    queued = 0
    expired = (BatchLine.objects.filter(job__status=BatchStatus.IN_PROGRESS,
                                        status=LineStatus.PENDING, leased_until__lt=Now())
               .exclude(lease="").values_list("job_id", "chunk").distinct()
               .order_by("job_id", "chunk"))
    for job_id, rows in groupby(expired, key=lambda row: row[0]):
        queued += _requeue_expired(job_id, [chunk for _job, chunk in rows])
    stale = 2 * liveness.lease()
    for job_id in BatchJob.stalled([BatchStatus.IN_PROGRESS], stale).values_list("pk",
                                                                               flat=True):
        queued += _restart_idle(job_id, stale)
    for job_id in BatchJob.stalled([BatchStatus.VALIDATING], stale).values_list("pk",
                                                                              flat=True):
        queued += _restart_validation(job_id, stale)
    return queued


def _locked(jobs: QuerySet[BatchJob]) -> BatchJob | None:
    """The job, its row locked, unless another transaction holds it."""
    return jobs.select_for_update(skip_locked=True).first()


def _count_requeue(job_id: str) -> None:
    BatchJob.objects.filter(pk=job_id).update(requeued=F("requeued") + 1,
                                              heartbeat_at=timezone.now())


def _requeue_expired(job_id: str, chunks: list[int]) -> int:
    with transaction.atomic():
        if _locked(BatchJob.objects.filter(pk=job_id, status=BatchStatus.IN_PROGRESS)) is None:
            return 0
        freed = (BatchLine.objects.filter(job_id=job_id, chunk__in=chunks,
                                          status=LineStatus.PENDING, leased_until__lt=Now())
                 .exclude(lease="").update(lease="", leased_until=None))
        if not freed:
            return 0  # renewed meanwhile: the run is alive
        _count_requeue(job_id)
        transaction.on_commit(lambda: batch.enqueue_chunks(job_id, chunks))
    logger.warning("batch %s: %d line(s) of chunk(s) %s were held by a run that stopped "
                   "renewing its lease (its worker died?); queued again",
                   job_id, freed, ", ".join(map(str, chunks)))
    return len(chunks)


def _restart_idle(job_id: str, stale: timedelta) -> int:
    with transaction.atomic():
        if _locked(BatchJob.stalled([BatchStatus.IN_PROGRESS], stale).filter(pk=job_id)) \
                is None:
            return 0
        pending = BatchLine.objects.filter(job_id=job_id, status=LineStatus.PENDING)
        if pending.exclude(batch.free_lines()).exists():
            return 0  # a live run holds lines: its renewals beat the job
        chunk = batch.free_chunk(job_id)
        if chunk is not None:
            _count_requeue(job_id)
            transaction.on_commit(lambda: batch.enqueue(batch.CHUNK_TASK, job_id, chunk))
    if chunk is None:  # every line written; the run that wrote the last one died
        batch.finish_if_done(job_id)
        return 0
    logger.warning("batch %s: no worker has run it for %d s; chunk %d queued again",
                   job_id, stale.total_seconds(), chunk)
    return 1


def _restart_validation(job_id: str, stale: timedelta) -> int:
    with transaction.atomic():
        if _locked(BatchJob.stalled([BatchStatus.VALIDATING], stale).filter(pk=job_id)) \
                is None:
            return 0
        _count_requeue(job_id)
        transaction.on_commit(lambda: batch.enqueue(batch.START_TASK, job_id))
    logger.warning("batch %s: still validating after %d s; its start task queued again",
                   job_id, stale.total_seconds())
    return 1
