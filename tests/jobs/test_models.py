"""The one ``Job`` base of batch and fine-tuning jobs: progress, rate and ETA from a
job's units over its current run, the heartbeat and cancel request its worker reads,
and the command line's progress line followed to the end."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management.base import OutputWrapper
from django.utils import timezone

from jobs.models import BatchFile, BatchJob, BatchStatus, FineTuneJob, FineTuneStatus
from jobs.progress import follow


def test_batch_rate_and_eta_count_only_the_lines_of_the_current_run():
    started = timezone.now() - timedelta(seconds=10)
    job = BatchJob(status=BatchStatus.IN_PROGRESS, total=100, done=40, failed=10,
                   progress_base=30, in_progress_at=started)

    assert job.progress == 0.5
    assert job.rate() == pytest.approx(2.0, rel=0.05)  # 20 lines of this run in 10 s
    assert job.eta_seconds() == pytest.approx(25.0, rel=0.05)  # 50 left at 2 a second


def test_a_finished_job_has_no_eta_and_a_job_not_started_no_rate():
    done = FineTuneJob(status=FineTuneStatus.SUCCEEDED, step=36, total_steps=36,
                       started_at=timezone.now() - timedelta(seconds=12),
                       finished_at=timezone.now())
    queued = FineTuneJob(status=FineTuneStatus.QUEUED)

    assert done.finished and done.progress == 1.0 and done.eta_seconds() is None
    assert done.rate() == pytest.approx(3.0, rel=0.05)
    assert queued.rate() is None and queued.progress == 0.0


def test_an_error_is_kept_to_its_limit():
    job = BatchJob()
    job.set_error("x" * 10_000)

    assert len(job.error) == BatchJob.MAX_ERROR_CHARS


@pytest.mark.django_db
def test_beat_writes_progress_with_the_heartbeat_and_says_when_to_stop():
    upload = BatchFile.objects.create(purpose="batch", filename="in.jsonl", content=b"")
    job = BatchJob.objects.create(input_file=upload, total=10)

    assert BatchJob.beat(job.pk, done=3) is True
    job.refresh_from_db()
    assert job.done == 3 and job.running_elsewhere(timedelta(minutes=1))

    BatchJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    assert BatchJob.beat(job.pk, done=4) is False


def test_follow_writes_each_new_progress_line_until_the_job_ends():
    states = iter([BatchJob(status=BatchStatus.IN_PROGRESS, total=4, done=1),
                   BatchJob(status=BatchStatus.IN_PROGRESS, total=4, done=1),
                   BatchJob(status=BatchStatus.COMPLETED, total=4, done=4)])
    out = io.StringIO()

    last = follow(lambda: next(states), OutputWrapper(out), poll_s=0)

    lines = out.getvalue().splitlines()
    assert last.status == BatchStatus.COMPLETED
    assert len(lines) == 2  # the unchanged second state is not written again
    assert lines[0].startswith("[########----------------------] 1/4 ok")
    assert lines[1].endswith("completed")
