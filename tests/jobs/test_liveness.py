"""Beat's watchdog and the leases behind it, in-process (no worker; the tasks the
services queue are kept here): a chunk whose run stopped renewing its lease is given
back and queued once; a run that lost its lease writes and counts nothing; a job no
run beats gets one chunk task, which takes every free chunk; a job stuck validating
gets its start task again; a fine-tuning job whose worker died is queued again under
a new task id, and the old run, if alive, is told it no longer owns the job. The
real-process drill (SIGKILL at 40 %): ``test_worker_killed.py``."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import batch, batch_files, batch_watchdog, finetune, liveness
from jobs.models import (
    BatchJob,
    BatchLine,
    BatchStatus,
    Dataset,
    FineTuneJob,
    FineTuneStatus,
    LineStatus,
)
from routing import rules
from routing.models import ModelEndpoint
from routing.usage_models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)
LONG_AGO = timedelta(minutes=5)


@pytest.fixture(autouse=True)
def queued(monkeypatch) -> list[tuple]:
    sent: list[tuple] = []
    kinds = {batch.START_TASK: "start", batch.CHUNK_TASK: "chunk"}
    monkeypatch.setattr("jobs.batch.enqueue",
                        lambda task, *args: sent.append((kinds[task], *args)))
    monkeypatch.setattr("jobs.finetune.enqueue",
                        lambda job: sent.append(("finetune", job.pk, job.celery_task_id)))
    return sent


@pytest.fixture(autouse=True)
def echo():
    rules.clear_local_copy()
    rules.bump_version()
    return ModelEndpoint.objects.create(name="echo", engine="echo", max_batch=8)


def started_job(lines: int, chunk_size: int) -> BatchJob:
    content = "".join(json.dumps({"custom_id": f"c{n}", "method": "POST",
                                  "url": "/v1/chat/completions",
                                  "body": {"model": "echo", "messages": [
                                      {"role": "user", "content": f"line {n}"}]}}) + "\n"
                      for n in range(lines)).encode()
    job = batch.create_job(batch_files.create_file(content, "in.jsonl"),
                           chunk_size=chunk_size)
    batch.start_job(job.pk)
    job.refresh_from_db()
    return job


def expire(token: str) -> None:
    """The run ``token`` stopped renewing: its lease has run out."""
    BatchLine.objects.filter(lease=token).update(leased_until=timezone.now() - timedelta(
        seconds=1))


def result(line: BatchLine, run: str) -> batch.LineResult:
    return batch.LineResult(line.pk, LineStatus.SUCCEEDED, 200, {"run": run}, f"{run}-{line.pk}",
                            {"endpoint": "batch", "model": "echo", "request_id": run})


def test_a_chunk_whose_run_stopped_renewing_is_given_back_and_queued_once(queued):
    job = started_job(4, chunk_size=2)
    queued.clear()
    assert len(batch.claim(job.pk, 0, "dead")) == 2
    assert batch_watchdog.resume_stalled() == 0  # the lease still runs: the run may be alive

    expire("dead")
    assert batch_watchdog.resume_stalled() == 1
    assert batch_watchdog.resume_stalled() == 0  # given back: not queued twice

    assert queued == [("chunk", job.pk, 0)]
    assert set(job.lines.filter(chunk=0).values_list("lease", flat=True)) == {""}
    job.refresh_from_db()
    assert job.requeued == 1
    batch.run_chunk(job.pk, 0)
    assert job.lines.filter(chunk=0, status=LineStatus.SUCCEEDED).count() == 2


def test_a_run_that_lost_its_lease_writes_and_counts_nothing():
    job = started_job(3, chunk_size=3)
    slow = batch.claim(job.pk, 0, "slow")
    expire("slow")  # stalled past its lease: the watchdog or another run takes over
    fast = batch.claim(job.pk, 0, "fast")

    assert [line.pk for line in fast] == [line.pk for line in slow]
    assert batch.claim(job.pk, 0, "third") == []  # held: nobody else gets them
    batch.write_results(job.pk, [result(line, "fast") for line in fast], "fast")
    batch.write_results(job.pk, [result(line, "slow") for line in slow], "slow")

    assert list(job.lines.values_list("response", flat=True)) == [{"run": "fast"}] * 3
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["fast"] * 3


def test_a_line_whose_runs_all_crash_fails_after_max_claims_instead_of_looping():
    job = started_job(1, chunk_size=1)
    for run in range(batch.MAX_CLAIMS):
        assert len(batch.claim(job.pk, 0, f"run-{run}")) == 1
        expire(f"run-{run}")  # the run crashed on it, or its worker died

    assert batch.claim(job.pk, 0, "one-more") == []
    line = job.lines.get()
    assert (line.status, line.response["error"]["code"]) == (LineStatus.FAILED,
                                                              "line_runs_exhausted")


def test_a_job_no_run_beats_gets_one_chunk_task_that_takes_every_free_chunk(queued):
    job = started_job(6, chunk_size=2)
    assert queued[-3:] == [("chunk", job.pk, 0), ("chunk", job.pk, 1), ("chunk", job.pk, 2)]
    queued.clear()  # fetched by a worker that died before it ran them
    BatchJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - LONG_AGO)

    assert batch_watchdog.resume_stalled() == 1
    assert batch_watchdog.resume_stalled() == 0  # beaten just now, by the watchdog itself
    assert queued == [("chunk", job.pk, 0)]
    batch.run_chunks(job.pk, 0)

    job.refresh_from_db()
    assert (job.status, job.done) == (BatchStatus.COMPLETED, 6)


def test_a_job_stuck_in_validation_gets_its_start_task_again(queued):
    job = batch.create_job(batch_files.create_file(b'{"custom_id": "a"}\n', "in.jsonl"))
    BatchJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - LONG_AGO)

    assert batch_watchdog.resume_stalled() == 1
    assert queued == [("start", job.pk), ("start", job.pk)]


@pytest.fixture
def running_finetune() -> FineTuneJob:
    base = ModelEndpoint.objects.create(name="tiny", engine="transformers", model_path="/x")
    dataset = Dataset.objects.create(name="d", content=b"{}\n", sha256="0" * 64,
                                     line_count=1)
    return FineTuneJob.objects.create(base_endpoint=base, dataset=dataset,
                                      status=FineTuneStatus.RUNNING, celery_task_id="old",
                                      heartbeat_at=timezone.now(), step=7)


def test_a_fine_tuning_job_whose_worker_died_trains_again_under_a_new_task(
        running_finetune, queued):
    job = running_finetune
    assert finetune.resume_stalled() == 0  # beaten just now

    FineTuneJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - LONG_AGO)
    assert finetune.resume_stalled() == 1

    renewed = FineTuneJob.objects.get(pk=job.pk)
    assert (renewed.status, renewed.requeued) == (FineTuneStatus.QUEUED, 1)
    assert renewed.celery_task_id != "old"
    assert queued == [("finetune", job.pk, renewed.celery_task_id)]
    # the old task, handed out again by the broker, is skipped; the old run, if only
    # slow, finds the job no longer its own at its next step
    assert finetune._start(job.pk, "old") is None
    with pytest.raises(finetune.Superseded):
        finetune._flush(job)
    started = finetune._start(job.pk, renewed.celery_task_id)
    assert (started.status, started.step) == (FineTuneStatus.RUNNING, 0)


def test_keepalive_renews_every_third_of_the_lease_until_its_block_ends(settings):
    settings.OPENCLAW_JOB_LEASE_S = 0.3
    renewed = threading.Event()
    calls = []

    with liveness.Keepalive(lambda: (calls.append(1), renewed.set())):
        assert renewed.wait(2)  # every 0.1 s
    renewed.clear()

    assert calls
    assert not renewed.wait(0.4)  # stopped with the block
