"""Batch jobs in-process (no worker): line-by-line validation, running chunks
through the gateway with the echo engine, result and error files in input order,
cancel, retry of failed lines only, and the CLI."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from jobs import batch, batch_files, batch_wire
from jobs.models import BatchFile, BatchJob, BatchStatus, LineStatus
from routing import rules
from routing.keys import create_key
from routing.models import ModelEndpoint

# Committed transactions: the gateway reads the registry from pool threads.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def queued(monkeypatch) -> list[tuple]:
    """The tasks the services queue, kept here: these tests run them in-process."""
    sent: list[tuple] = []
    kinds = {batch.START_TASK: "start", batch.CHUNK_TASK: "chunk"}
    monkeypatch.setattr("jobs.batch.enqueue",
                        lambda task, *args: sent.append((kinds[task], *args)))
    return sent


@pytest.fixture(autouse=True)
def echo():
    rules.clear_local_copy()
    rules.bump_version()
    return ModelEndpoint.objects.create(name="echo", engine="echo", max_batch=8)


def request_line(custom_id: str, text: str, model: str = "echo", **extra) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": model, "messages": [{"role": "user", "content": text}],
                                **extra}})


def jsonl(rows: list[str]) -> bytes:
    return ("\n".join(rows) + "\n").encode()


def submit(content: bytes, chunk_size: int = 3, **options) -> BatchJob:
    job = batch.create_job(batch_files.create_file(content, "in.jsonl"), chunk_size=chunk_size,
                           **options)
    batch.start_job(job.pk)
    job.refresh_from_db()
    return job


def run_all(job: BatchJob) -> BatchJob:
    for chunk in sorted(set(job.lines.values_list("chunk", flat=True))):
        batch.run_chunk(job.pk, chunk)
    job.refresh_from_db()
    return job


def rows(file_id: str | None) -> list[dict]:
    content = bytes(BatchFile.objects.get(pk=file_id).content).decode()
    return [json.loads(line) for line in content.splitlines()]


def test_bad_lines_are_reported_with_their_numbers_and_good_lines_still_run():
    content = jsonl([
        request_line("a", "one"),
        "{not json",
        request_line("b", "two"),
        json.dumps({"custom_id": "c", "method": "GET", "url": "/v1/chat/completions",
                    "body": {}}),
        request_line("a", "duplicate id"),
        request_line("d", "streamed", stream=True),
        json.dumps({"custom_id": "e", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "echo", "messages": []}}),
        request_line("f", "three"),
    ])

    job = run_all(submit(content))

    assert [(p["line"], p["param"]) for p in job.validation_errors] == [
        (2, None), (4, "method"), (5, "custom_id"), (6, "body.stream"), (7, "body.messages")]
    assert job.status == BatchStatus.COMPLETED
    assert (job.total, job.done, job.failed) == (3, 3, 0)
    output = rows(job.output_file_id)
    assert [r["custom_id"] for r in output] == ["a", "b", "f"]
    assert output[2]["response"]["status_code"] == 200
    assert output[2]["response"]["body"]["choices"][0]["message"]["content"] == "three"
    errors = rows(job.error_file_id)
    assert [e["line"] for e in errors] == [2, 4, 5, 6, 7]
    assert errors[0]["error"]["message"].startswith("Not valid JSON")


def test_a_file_without_a_valid_line_fails_the_job_with_an_error_file():
    job = submit(jsonl(["[]", "{}"]))

    assert job.status == BatchStatus.FAILED
    assert job.total == 0
    assert [e["line"] for e in rows(job.error_file_id)] == [1, 2]


def test_results_keep_input_order_across_chunks():
    content = jsonl([request_line(f"id-{n:02d}", f"line {n}") for n in range(10)])

    job = submit(content, chunk_size=3)
    for chunk in (3, 1, 0, 2):  # chunks finish in any order
        batch.run_chunk(job.pk, chunk)
    job.refresh_from_db()

    assert job.status == BatchStatus.COMPLETED
    assert [r["custom_id"] for r in rows(job.output_file_id)] == [f"id-{n:02d}" for n in
                                                                  range(10)]


def test_a_chunk_run_twice_writes_each_line_once():
    job = submit(jsonl([request_line(f"x{n}", "hi") for n in range(4)]), chunk_size=4)
    lines = list(job.lines.order_by("line"))
    first = [batch.LineResult(line.pk, LineStatus.SUCCEEDED, 200, {"run": 1}, "r1")
             for line in lines[:2]]
    second = [batch.LineResult(line.pk, LineStatus.SUCCEEDED, 200, {"run": 2}, "r2")
              for line in lines]

    batch.write_results(job.pk, first)
    batch.write_results(job.pk, second)  # the redelivered chunk

    stored = list(job.lines.order_by("line").values_list("response", "attempts"))
    assert stored == [({"run": 1}, 1), ({"run": 1}, 1), ({"run": 2}, 1), ({"run": 2}, 1)]
    job.refresh_from_db()
    assert job.done == 4


def test_model_option_replaces_every_lines_model():
    job = run_all(submit(jsonl([request_line("a", "hi", model="nothing-here")]), model="echo"))

    assert job.status == BatchStatus.COMPLETED
    assert rows(job.output_file_id)[0]["response"]["body"]["model"] == "echo"


def test_lines_outside_the_keys_scope_are_refused_at_validation():
    key, _secret = create_key("scoped", allowed_models=["echo"])

    job = submit(jsonl([request_line("a", "hi"), request_line("b", "hi", model="other")]),
                 api_key=key)

    assert job.total == 1
    assert job.validation_errors[0]["line"] == 2
    assert job.validation_errors[0]["param"] == "body.model"


def test_cancel_stops_pending_chunks_and_keeps_finished_lines():
    job = submit(jsonl([request_line(f"c{n}", "hi") for n in range(6)]), chunk_size=2)
    batch.run_chunk(job.pk, 0)

    job = batch.cancel_job(job)
    batch.run_chunk(job.pk, 1)  # queued before the cancel: finds nothing to do
    job.refresh_from_db()

    assert job.status == BatchStatus.CANCELLED
    assert [r["custom_id"] for r in rows(job.output_file_id)] == ["c0", "c1"]
    cancelled = rows(job.error_file_id)
    assert [e["custom_id"] for e in cancelled] == ["c2", "c3", "c4", "c5"]
    assert {e["error"]["code"] for e in cancelled} == {"batch_cancelled"}
    assert not job.lines.filter(status=LineStatus.PENDING).exists()


def test_retry_reruns_only_the_failed_lines():
    content = jsonl([request_line("ok-1", "hi"), request_line("late", "hi", model="later"),
                     request_line("ok-2", "hi")])
    job = run_all(submit(content))
    assert (job.done, job.failed) == (2, 1)
    assert rows(job.error_file_id)[0]["response"]["status_code"] == 404
    before = dict(job.lines.values_list("custom_id", "request_id"))
    ModelEndpoint.objects.create(name="later", engine="echo")

    assert batch.retry_job(job) == 1
    job = run_all(job)

    assert job.status == BatchStatus.COMPLETED
    assert (job.done, job.failed) == (3, 0)
    assert job.error_file_id is None
    after = dict(job.lines.values_list("custom_id", "request_id"))
    assert after["ok-1"] == before["ok-1"] and after["ok-2"] == before["ok-2"]
    assert after["late"] != before["late"]
    assert job.lines.get(custom_id="late").attempts == 2
    assert [r["custom_id"] for r in rows(job.output_file_id)] == ["ok-1", "late", "ok-2"]


def test_a_running_job_cannot_be_retried():
    job = submit(jsonl([request_line("a", "hi")]))

    with pytest.raises(batch.BatchRefused):
        batch.retry_job(job)


def test_cli_submit_status_results_and_retry(tmp_path, queued):
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl([request_line("a", "hello world"), "oops"]))
    out = StringIO()

    call_command("batch", "submit", str(path), "--model", "echo", stdout=out)
    job = BatchJob.objects.get()
    assert queued == [("start", job.pk)]
    batch.start_job(job.pk)
    run_all(job)
    call_command("batch", "status", job.pk, stdout=out)
    call_command("batch", "results", job.pk, stdout=out)
    call_command("batch", "results", job.pk, "--errors", stdout=out)
    call_command("batch", "retry", job.pk, stdout=out)

    text = out.getvalue()
    assert f"submitted {job.pk}" in text
    assert "1/1 ok" in text and "completed" in text and "line 2: Not valid JSON" in text
    assert '"custom_id": "a"' in text and '"content": "hello world"' in text
    assert '"line": 2' in text
    assert "no failed line to retry" in text


def test_progress_line_shows_counts_rate_and_eta():
    job = submit(jsonl([request_line(f"p{n}", "hi") for n in range(4)]), chunk_size=2)
    batch.run_chunk(job.pk, 0)
    job.refresh_from_db()

    line = job.progress_line(width=10)

    assert line.startswith("[#####-----] 2/4 ok · 0 failed · ")
    assert "lines/s" in line and "ETA" in line and line.endswith("in_progress")
    assert batch_wire.batch_object(job)["request_counts"] == {"total": 4, "completed": 2,
                                                         "failed": 0}
