"""A batch job whose worker is killed with SIGKILL at ~40 % resumes by itself within
60 s, every line in the output and in usage exactly once.

What is real: two Celery worker processes (threads pool, as ``openclaw up`` runs it)
one after the other, a ``celery beat`` process with the project's schedule (its
watchdog, ``jobs.resume_stalled``, every 10 s), the broker (the embedded Redis, the
broker's visibility timeout left at its hour), PostgreSQL, and the loopback OpenAI
server as the model, slowed so that the kill lands mid-job. Nothing is shortened: the
lease (15 s) and the tick are the defaults. Beat and the workers use a queue of their
own for beat's ticks, so no other worker of the test session takes them."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from jobs import batch, batch_files
from jobs.models import BatchFile, BatchJob, BatchStatus, LineStatus
from routing import rules
from routing.models import ModelEndpoint
from routing.usage_models import UsageRecord

REPO = Path(__file__).resolve().parents[2]
LINES = 400
KILL_AT = 150  # of 400 lines done: 38 %
RESUMED_WITHIN_S = 60.0
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
logger = logging.getLogger(__name__)


@pytest.fixture
def slow_model(openai_server) -> ModelEndpoint:
    """About 0.15 s a line, 8 lines at once over all workers: ~10 s for the job."""
    model = ModelEndpoint.objects.create(name="slow-batch", engine="openai",
                                         endpoint_url=openai_server.url,
                                         upstream_model="echo+slowstart-150", max_batch=8)
    rules.clear_local_copy()
    rules.bump_version()
    return model


@pytest.fixture
def beat(tmp_path):
    """Start ``celery beat`` sending its ticks to ``queue``; stopped after the test."""
    processes = []

    def start(queue: str) -> subprocess.Popen:
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", PYTHONUNBUFFERED="1",
                   OPENCLAW_SCHEDULE_QUEUE=queue)
        with open(tmp_path / "beat.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "openclaw_site", "beat", "-l", "INFO",
                 "-s", str(tmp_path / "beat-schedule"), "--max-interval", "1"],
                env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def submit(model: str) -> BatchJob:
    content = "".join(
        json.dumps({"custom_id": f"req-{n:04d}", "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": model,
                             "messages": [{"role": "user", "content": f"line {n}"}]}}) + "\n"
        for n in range(LINES)).encode()
    return batch.create_job(batch_files.create_file(content, "in.jsonl"), chunk_size=25)


def wait_for(job: BatchJob, done: callable, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        job.refresh_from_db()
        if done(job):
            return
        assert time.monotonic() < deadline, f"job {job.pk} stuck: {job.progress_line()}"
        time.sleep(0.05)


def test_a_worker_killed_at_40_percent_resumes_within_60_s_with_every_line_once(
        start_worker, beat, slow_model, openai_server):
    # given: a worker and beat as `openclaw up` runs them, and a 400-line job under way
    ticks = f"ticks-{uuid.uuid4().hex[:8]}"
    worker = start_worker(queues=f"batch,{ticks}", concurrency=2)
    beat(ticks)
    job = submit(slow_model.name)
    wait_for(job, lambda j: j.done >= KILL_AT, timeout=60)

    # when: the worker is killed; a new one starts, as `up` starts it again
    worker.kill()
    killed_at = time.monotonic()
    job.refresh_from_db()
    at_kill = job.done
    second = start_worker(queues=f"batch,{ticks}", concurrency=2)
    wait_for(job, lambda j: j.finished, timeout=RESUMED_WITHIN_S + 30)
    resumed_in = time.monotonic() - killed_at

    # then: complete within 60 s of the kill, each line once in the output and in usage
    logger.info("killed at %d/%d lines; completed %.1f s after the kill; %d model calls; "
                "re-queued %d time(s)", at_kill, LINES, resumed_in,
                len(openai_server.requests), job.requeued)
    assert at_kill < LINES * 0.6
    assert job.status == BatchStatus.COMPLETED, job.progress_line()
    assert resumed_in < RESUMED_WITHIN_S
    assert (job.total, job.done, job.failed) == (LINES, LINES, 0)
    content = bytes(BatchFile.objects.get(pk=job.output_file_id).content).decode()
    ids = [json.loads(line)["custom_id"] for line in content.splitlines()]
    assert ids == [f"req-{n:04d}" for n in range(LINES)]
    assert not job.lines.exclude(status=LineStatus.SUCCEEDED).exists()
    request_ids = set(job.lines.values_list("request_id", flat=True))
    usage = UsageRecord.objects.filter(endpoint="batch", model=slow_model.name)
    assert usage.count() == LINES
    assert set(usage.values_list("request_id", flat=True)) == request_ids
    assert len(request_ids) == LINES
    # beat's watchdog ran in the workers all along (it re-queues what no live run holds)
    assert "jobs.resume_stalled" in worker.log_path.read_text() + second.log_path.read_text()
