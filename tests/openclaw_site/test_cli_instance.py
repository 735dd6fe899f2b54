"""A newcomer's first minutes with `openclaw up --data-dir D`, as real processes: `up`
registers itself; a command that would use an empty default folder is refused in one
line naming D (and creates nothing); with --data-dir D it works, and the key it prints
is one the running server accepts; `doctor` passes on the fresh install in the shell's
language; `up` names the studio first; and its log carries no beat ticks at INFO and
no progress bars, even while the worker and the command line embed text."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from celery.app.trace import LOG_SUCCESS
from django.utils import translation

from openclaw_site import instances
from openclaw_site.celery import BEAT_SENDING
from openclaw_site.embedded import take_up_lock
from openclaw_site.settings import _default_data_dir
from tests.openclaw_site.test_up import (
    OPENCLAW,
    clean_env,
    free_port,
    stop_and_check_nothing_left,
    wait_ready,
)

REMEMBER = """
import time
from celery import current_app
from chat.models import Conversation, MemoryItem, Message
message = Message.objects.create(conversation=Conversation.objects.create(user="newcomer"),
    turn=1, role="user", content="My sister Alice lives in Lisbon and studies dolphins.")
current_app.send_task("chat.remember_messages", [[message.pk]], queue="default")
deadline = time.monotonic() + 30
while not MemoryItem.objects.filter(source=message).exists() and time.monotonic() < deadline:
    time.sleep(0.2)
print(MemoryItem.objects.filter(source=message).count())
"""
PROGRESS_BAR_MARKS = ("it/s]", "Batches:", "celery.redirected", "%|")


@pytest.fixture
def home(monkeypatch):
    path = Path(tempfile.mkdtemp(prefix="ochome-"))
    monkeypatch.setenv("HOME", str(path))
    for name in ("XDG_DATA_HOME", "XDG_STATE_HOME", "OPENCLAW_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def data_dir():
    path = Path(tempfile.mkdtemp(prefix="ocin-"))  # short: unix sockets live in it
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def openclaw(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*OPENCLAW, *args], env=env, capture_output=True, text=True,
                          timeout=90)


def status_with_key(url: str, secret: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {secret}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def log_records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"level"')]


@pytest.mark.slow
def test_a_newcomers_commands_find_the_running_instance(home, data_dir):
    # given: `openclaw up --data-dir D`, beat ticking every second, logging at DEBUG
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(HOME=str(home), OPENCLAW_LOG_LEVEL="DEBUG", OPENCLAW_JOB_RESUME_TICK_S="1",
                    OPENCLAW_SCHEDULE_TICK_S="1")
    log_path = home / "up.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([*OPENCLAW, "up", "--port", str(port), "--data-dir",
                                    str(data_dir)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(base, process)
        [entry] = (home / ".local/state/openclaw/instances").glob("*.json")
        assert json.loads(entry.read_text()) == {"data_dir": str(data_dir), "pid": process.pid,
                                                 "port": port, "url": base}

        # when: a command without --data-dir (the default folder is empty)
        refused = openclaw(env, "keys", "create", "--name", "newcomer")

        # then: one line naming the running instance and how to reach it; nothing made
        assert refused.returncode != 0
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, refused.stderr
        assert lines[0].startswith("openclaw: error: ")
        assert f"running for {data_dir} ({base}" in lines[0]
        assert f"--data-dir {data_dir} " in lines[0] and f"OPENCLAW_DATA_DIR={data_dir}" in lines[0]
        assert refused.stdout == ""
        assert not (home / ".local/share").exists()

        # when: the same command aimed at D
        made = openclaw(env, "--data-dir", str(data_dir), "keys", "create", "--name", "newcomer")

        # then: the key works against the running server
        assert made.returncode == 0, made.stderr
        secret = made.stdout.strip().splitlines()[-1]
        assert status_with_key(f"{base}/v1/models", secret) == 200
        assert status_with_key(f"{base}/v1/models", secret + "x") == 401

        # and: the worker embeds a message into memory (meanwhile: doctor)
        remember = subprocess.Popen([*OPENCLAW, "--data-dir", str(data_dir), "shell",
                                     "--no-imports", "-c", REMEMBER], env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        # and: doctor passes on the fresh install, in the shell's language, no bars
        doctor = openclaw({**env, "OPENCLAW_LANGUAGE": "zh-hans"}, "--data-dir", str(data_dir),
                          "doctor")
        with translation.override("zh-hans"):
            echo_line = translation.gettext("model %(name)s one-token generation") % {
                "name": "echo"}
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert f"] {echo_line}: " in doctor.stdout and "one-token" not in echo_line
        assert "all-minilm-l6-v2" in doctor.stdout and "[FAIL]" not in doctor.stdout
        assert not any(mark in doctor.stderr for mark in PROGRESS_BAR_MARKS), doctor.stderr

        remembered, problems = remember.communicate(timeout=60)
        assert remembered.strip().splitlines()[-1] == "1", problems
    finally:
        stop_and_check_nothing_left(process, data_dir, signal.SIGINT)

    assert list((home / ".local/state/openclaw/instances").glob("*.json")) == []
    output = log_path.read_text()
    said = [line for line in output.splitlines() if line.startswith("openclaw: ")]
    ready = next(i for i, line in enumerate(said) if "ready in" in line)
    assert said[ready + 1].split()[1:3] == ["studio", f"{base}/studio/"]
    assert "log in as admin with the password shown above" in said[ready + 1]
    records = log_records(output)
    ticks = [r for r in records if r["message"].startswith("Scheduler: Sending due task")]
    assert ticks and {r["level"] for r in ticks} == {"DEBUG"}
    tick_tasks = [r for r in records if "jobs.resume_stalled[" in r["message"]]
    assert tick_tasks and {r["level"] for r in tick_tasks} == {"DEBUG"}
    assert any("chat.remember_messages[" in r["message"] and r["level"] == "INFO"
               for r in records)  # other tasks keep their INFO lines
    assert [line for line in output.splitlines()
            if any(mark in line for mark in PROGRESS_BAR_MARKS)] == []


def test_the_cli_and_settings_agree_on_the_default_data_folder(home):
    assert instances.default_data_dir() == _default_data_dir().resolve()
    assert instances.data_dir_in_use() == home / ".local/share/openclaw"
    assert instances.data_dir_in_use({"OPENCLAW_DATA_DIR": "~/x"}) == home / "x"


def test_stale_registry_entries_are_ignored_and_cleared(home, data_dir):
    # given: an entry whose up died (pid gone), one whose lock is free (kill -9 + reuse)
    gone = instances.register(data_dir / "gone", port=1, url="http://127.0.0.1:1")
    gone.write_text(json.dumps({"data_dir": str(data_dir / "gone"), "pid": 2 ** 22 + 7,
                                "port": 1, "url": "http://127.0.0.1:1"}))  # above pid_max
    unlocked = instances.register(data_dir, port=2, url="http://127.0.0.1:2")

    assert instances.running_instances() == []
    assert not gone.exists() and not unlocked.exists()

    # when: this process holds the folder's up lock and registers
    lock = take_up_lock(data_dir, port=3)
    try:
        entry = instances.register(data_dir, port=3, url="http://127.0.0.1:3")
        found = instances.running_instances()
        other = home / "empty"

        # then: found; another empty folder would miss it; D itself or a folder
        # with an installation would not
        assert found == [instances.Instance(data_dir, os.getpid(), 3, "http://127.0.0.1:3")]
        assert instances.instances_elsewhere(other) == found
        assert instances.instances_elsewhere(data_dir) == []
        (other / "postgres").mkdir(parents=True)
        (other / "postgres" / "PG_VERSION").write_text("18")
        assert instances.instances_elsewhere(other) == []
        instances.unregister(entry)
        assert not entry.exists()
    finally:
        os.close(lock)


def test_beat_ticks_are_logged_at_debug_and_their_errors_stay(caplog):
    beat = logging.getLogger("celery.beat")
    trace = logging.getLogger("celery.app.trace")
    caplog.set_level(logging.INFO)

    beat.info(BEAT_SENDING, "resume-stalled-jobs", "jobs.resume_stalled")
    beat.info(BEAT_SENDING, "something-else", "not.on.the.schedule")
    trace.info(LOG_SUCCESS, {"name": "chat.run_due_schedules", "id": "1", "runtime": 0.01,
                "return_value": 0},
               extra={"data": {"name": "chat.run_due_schedules"}})
    beat.error("Message Error: %s", "broker gone")

    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [("INFO", "Scheduler: Sending due task something-else (not.on.the.schedule)"),
                    ("ERROR", "Message Error: broker gone")]
