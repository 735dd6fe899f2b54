"""Batch jobs through a real Celery worker on the ``batch`` queue: a 1000-line job
with visible progress. A worker killed with SIGKILL mid-job: ``test_worker_killed.py``."""

from __future__ import annotations

import json
import time

import pytest
from django.core.management import call_command

from jobs import batch, batch_files
from jobs.models import BatchFile, BatchJob, BatchStatus
from routing import rules
from routing.models import ModelEndpoint

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def echo():
    call_command("loaddata", "fixtures/10_models.json", verbosity=0)
    rules.clear_local_copy()
    rules.bump_version()
    return ModelEndpoint.objects.get(name="echo")


def submit(lines: int, chunk_size: int) -> BatchJob:
    content = "".join(
        json.dumps({"custom_id": f"req-{n:04d}", "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "echo",
                             "messages": [{"role": "user", "content": f"line {n}"}]}}) + "\n"
        for n in range(lines)).encode()
    return batch.create_job(batch_files.create_file(content, "in.jsonl"), chunk_size=chunk_size)


def wait_until(job: BatchJob, done: callable, timeout: float) -> list[tuple[int, int]]:
    """Poll the job until ``done(job)``; the (done, failed) counts seen on the way."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        job.refresh_from_db()
        seen.append((job.done, job.failed))
        if done(job):
            return seen
        assert time.monotonic() < deadline, f"job {job.pk} stuck: {job.status} {seen[-1]}"
        time.sleep(0.05)


def output_ids(job: BatchJob) -> list[str]:
    content = bytes(BatchFile.objects.get(pk=job.output_file_id).content).decode()
    return [json.loads(line)["custom_id"] for line in content.splitlines()]


def test_thousand_line_batch_runs_through_a_worker_with_progress(start_worker, echo):
    echo.default_params = {"delay_ms": 2}
    echo.save()
    start_worker(queues="batch", concurrency=4)

    job = submit(1000, chunk_size=50)
    seen = wait_until(job, lambda j: j.finished, timeout=120)

    assert job.status == BatchStatus.COMPLETED
    assert (job.total, job.done, job.failed) == (1000, 1000, 0)
    assert any(0 < done < 1000 for done, _failed in seen), "no progress was visible"
    assert output_ids(job) == [f"req-{n:04d}" for n in range(1000)]
    assert job.error_file_id is None
    assert job.rate() > 0
