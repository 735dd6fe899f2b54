"""`openclaw batch submit --wait` ends with what `batch status` says: the counts, the
invalid input lines counted and named (number and reason), and the job's status by
its translated label, not its raw value."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import translation

from jobs import batch
from jobs.models import BatchJob, BatchStatus
from routing import rules
from routing.models import ModelEndpoint

# Committed transactions: the gateway reads the registry from pool threads.
pytestmark = pytest.mark.django_db(transaction=True)

# What README shows: one request per line, OpenAI's batch format.
GOOD = ('{"custom_id": "q%d", "method": "POST", "url": "/v1/chat/completions", '
        '"body": {"model": "echo", "messages": [{"role": "user", "content": "Hello %d"}]}}')


@pytest.fixture(autouse=True)
def inline_tasks(monkeypatch):
    """The job's tasks run as soon as they are queued, as a worker would run them."""
    tasks = {batch.START_TASK: batch.start_job, batch.CHUNK_TASK: batch.run_chunk}
    monkeypatch.setattr("jobs.batch.enqueue", lambda task, *args: tasks[task](*args))
    rules.clear_local_copy()
    rules.bump_version()
    ModelEndpoint.objects.create(name="echo", engine="echo", max_batch=8)


@pytest.fixture
def input_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join([GOOD % (1, 1), GOOD % (2, 2), GOOD % (3, 3),
                               '{"custom_id": "q4", "body": {"model": "echo"}']) + "\n")
    return path


def submit_and_wait(path) -> tuple[BatchJob, list[str]]:
    out, err = StringIO(), StringIO()
    call_command("batch", "submit", str(path), "--wait", stdout=out, stderr=err)
    return BatchJob.objects.get(), out.getvalue().splitlines()


def test_the_readme_line_is_valid_openai_batch_jsonl(input_file):
    job, _lines = submit_and_wait(input_file)

    assert json.loads(GOOD % (1, 1))["body"]["messages"][0]["role"] == "user"
    assert (job.status, job.total, job.done) == (BatchStatus.COMPLETED, 3, 3)


def test_submit_wait_counts_and_names_the_invalid_lines(input_file):
    job, lines = submit_and_wait(input_file)

    summary = next(line for line in lines if line.startswith(f"{job.pk}  "))
    assert "3/3 ok · 0 failed · 1 invalid line · " in summary
    assert summary.endswith(" · completed")
    assert [p["line"] for p in job.validation_errors] == [4]
    assert lines[-1] == f"  line 4: {job.validation_errors[0]['message']}"
    assert lines[-1].startswith("  line 4: Not valid JSON")


def test_status_labels_follow_the_language(input_file):
    job, _lines = submit_and_wait(input_file)
    out = StringIO()

    with translation.override("zh-hans"):
        call_command("batch", "status", job.pk, stdout=out)
        label = str(BatchStatus.COMPLETED.label)
        invalid = translation.gettext("  line %(line)s: %(message)s") % job.validation_errors[0]

    assert label != "completed"  # the catalogue has it in Chinese
    first, second = out.getvalue().splitlines()
    assert first.endswith(f" · {label}") and "completed" not in first
    assert second == invalid and "4" in second and "Not valid JSON" in second
