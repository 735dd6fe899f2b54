"""Scheduled workflow runs.

What is real in ``test_scheduled_workflow_runs_from_beat_with_a_real_worker``: a
``celery beat`` process (the project's ``CELERY_BEAT_SCHEDULE``), a Celery worker
process, the broker (the embedded Redis), PostgreSQL, the workflow and the echo
engine. What is shortened: beat's tick (``OPENCLAW_SCHEDULE_TICK_S=0.5`` instead of
15 s) and the schedule (every 2 seconds instead of a cron expression: cron's
resolution is a minute, too slow for a test; cron is tested apart, on its times).
Both processes use a queue of their own, so no other worker of the test session
takes their tasks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from chat.models import Message, Workflow, WorkflowSchedule
from chat.workflows.schedule import hand_out_due, next_run
from routing.models import ModelEndpoint

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


def answering_workflow() -> Workflow:
    return Workflow.objects.create(slug="daily", name="daily", default_model="echo",
                                   definition={"nodes": [
                                       {"id": "answer", "type": "llm"},
                                       {"id": "store", "type": "memory_write"}],
                                       "edges": [{"source": "answer", "target": "store"}]})


def test_cron_schedule_runs_at_its_next_cron_time(db):
    schedule = WorkflowSchedule(name="x", workflow=answering_workflow(), cron="30 8 * * 1-5",
                                user="u", content="hi")

    after = next_run(schedule, datetime(2026, 11, 27, 9, 0, tzinfo=UTC))  # a Friday

    assert after == datetime(2026, 11, 30, 8, 30, tzinfo=UTC)  # Monday


def test_bad_schedules_are_refused_with_the_field_named(db):
    flow = answering_workflow()
    both = WorkflowSchedule(name="x", workflow=flow, cron="* * * * *", every_seconds=5,
                            user="u", content="hi")
    bad = WorkflowSchedule(name="x", workflow=flow, cron="every day", user="u", content="hi")

    for schedule, field in ((both, "cron"), (bad, "cron")):
        with pytest.raises(ValidationError) as caught:
            schedule.full_clean()
        assert field in caught.value.message_dict


def test_a_new_schedule_gets_its_first_time_before_it_runs(db):
    schedule = WorkflowSchedule.objects.create(name="x", workflow=answering_workflow(),
                                               every_seconds=60, user="u", content="hi")

    assert hand_out_due() == []
    schedule.refresh_from_db()
    assert schedule.next_run_at is not None


def beat(queue: str, database: str, folder: Path) -> subprocess.Popen:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", PYTHONUNBUFFERED="1",
               OPENCLAW_TEST_WORKER_DB=database, OPENCLAW_SCHEDULE_TICK_S="0.5",
               OPENCLAW_SCHEDULE_QUEUE=queue)
    log = open(folder / "beat.log", "ab")  # noqa: SIM115  (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "openclaw_site", "beat", "-l", "INFO",
         "-s", str(folder / "beat-schedule"), "--max-interval", "1"],
        env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_scheduled_workflow_runs_from_beat_with_a_real_worker(start_worker, tmp_path):
    # given a workflow scheduled every 2 seconds
    ModelEndpoint.objects.create(name="echo", engine="echo")
    schedule = WorkflowSchedule.objects.create(
        name="heartbeat", workflow=answering_workflow(), every_seconds=2, user="ops",
        content="status report please")
    queue = f"schedule-{uuid.uuid4().hex[:8]}"
    database = connection.settings_dict["NAME"]
    start_worker(queues=queue, env={"OPENCLAW_SCHEDULE_QUEUE": queue,
                                    "OPENCLAW_MEMORY_QUEUE": queue,
                                    "OPENCLAW_MEMORY_TOP_K": "0",
                                    "OPENCLAW_MEMORY_MIN_CHARS": "1000"})

    # when beat runs
    process = beat(queue, database, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            schedule.refresh_from_db()
            if schedule.last_status:
                break
            assert process.poll() is None, (tmp_path / "beat.log").read_text()[-3000:]
            time.sleep(0.3)
    finally:
        process.terminate()
        process.wait(15)

    # then the worker ran the workflow as a turn of the schedule's user
    assert schedule.last_status == "done", (schedule.last_error,
                                            (tmp_path / "beat.log").read_text()[-2000:])
    conversation = schedule.last_conversation
    assert conversation.user == "ops" and conversation.workflow.slug == "daily"
    assert list(Message.objects.filter(conversation=conversation).order_by("id")
                .values_list("role", "content")) == [
        ("user", "status report please"), ("assistant", "status report please")]
    assert schedule.next_run_at > schedule.last_run_at
