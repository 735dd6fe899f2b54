"""Batch jobs through real Celery workers on the ``batch`` queue: a 1000-line job
with visible progress, and a worker killed with SIGKILL mid-job whose unacknowledged
chunks are handed to a restarted worker — the result has every line exactly once."""

from __future__ import annotations

import json
import time

import pytest
from django.core.management import call_command

from jobs import batch, batch_files
from jobs.models import BatchFile, BatchJob, BatchStatus, LineStatus
from routing import rules
from routing.models import ModelEndpoint

pytestmark = pytest.mark.django_db(transaction=True)
# A short visibility timeout in the workers' environment, so that a restarted worker
# takes back, at start-up, the chunks a killed one had received and not acknowledged.
# (Production keeps the default hour: a crashed job resumes when its chunks come back.)
REDELIVER_AFTER_S = 2


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


def test_sigkilled_worker_restarted_yields_every_line_once(start_worker, echo):
    echo.default_params = {"delay_ms": 25}  # "line N": 2 words, ~50 ms a line
    echo.save()
    env = {"OPENCLAW_BROKER_VISIBILITY_TIMEOUT_S": str(REDELIVER_AFTER_S),
           "OPENCLAW_BATCH_CONCURRENCY": "8"}
    worker = start_worker(queues="batch", concurrency=2, env=env)
    job = submit(240, chunk_size=20)
    wait_until(job, lambda j: j.done >= 40, timeout=60)

    # when: killed mid-job, then a new worker once the redelivery delay has passed
    worker.kill()
    job.refresh_from_db()
    at_kill = job.done
    assert job.status == BatchStatus.IN_PROGRESS and at_kill < 240
    time.sleep(REDELIVER_AFTER_S + 0.5)
    start_worker(queues="batch", concurrency=2, env=env)
    wait_until(job, lambda j: j.finished, timeout=90)

    # then
    assert job.status == BatchStatus.COMPLETED
    assert (job.done, job.failed) == (240, 0)
    assert output_ids(job) == [f"req-{n:04d}" for n in range(240)]
    assert not job.lines.exclude(status=LineStatus.SUCCEEDED).exists()
