"""`openclaw up` as a user runs it: a real subprocess with its own data folder,
embedded PostgreSQL + Redis, daphne, a Celery worker and beat; then Ctrl-C.

Distributed-mode tests use the machine's Redis on 127.0.0.1:6379 and, as the
"external" PostgreSQL with pgvector, the session's embedded server over
DATABASE_URL (the machine's PostgreSQL 15 has no pgvector)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import psycopg
import pytest

from core.crypto import new_key_spec

pytestmark = pytest.mark.slow

OPENCLAW = [sys.executable, "-m", "openclaw_site.cli"]
READY_LIMIT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def data_dir():
    # Short path: unix sockets live in it.
    path = Path(tempfile.mkdtemp(prefix="ocup-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENCLAW_", "DJANGO_"))
        and k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "CELERY_BROKER_URL"}
    }
    env.update(extra)
    return env


def get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_ready(base: str, process: subprocess.Popen) -> float:
    started = time.monotonic()
    while time.monotonic() - started < READY_LIMIT_S:
        assert process.poll() is None, "openclaw up exited before it was ready"
        try:
            if get(f"{base}/readyz", timeout=2)[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"not ready within {READY_LIMIT_S} s")


def processes_using(data_dir: Path) -> dict[int, psutil.Process]:
    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(data_dir) in part for part in proc.info["cmdline"] or []):
            found[proc.pid] = proc
    return found


def processes_of(data_dir: Path, root: psutil.Process) -> list[psutil.Process]:
    """Every process `up` started: its descendants and servers using the data folder."""
    found = {p.pid: p for p in root.children(recursive=True)}
    found.update(processes_using(data_dir))
    found.pop(os.getpid(), None)
    return list(found.values())


def still_running(procs: list[psutil.Process]) -> list[str]:
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(" ".join(proc.cmdline())[:120])
        except psutil.NoSuchProcess:
            pass
    return alive


def start_up(data_dir: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [*OPENCLAW, "up", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_and_check_nothing_left(process: subprocess.Popen, data_dir: Path, signum: int) -> str:
    procs = processes_of(data_dir, psutil.Process(process.pid))
    assert len(procs) >= 3  # web, worker, beat at least
    process.send_signal(signum)
    output, _ = process.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while still_running(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert still_running(procs) == []
    assert process.returncode == 0, output
    return output


def test_up_embedded_runs_everything_and_ctrl_c_leaves_nothing(data_dir):
    # given
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_up(
        data_dir,
        port,
        clean_env(OPENCLAW_ADMIN_USER="boss", OPENCLAW_ADMIN_PASSWORD="s3cret-pass-42"),
    )
    try:
        # when
        wait_ready(base, process)

        # then: ready, admin renders, a task goes web -> worker process -> back
        assert get(f"{base}/healthz")[0] == 200
        status, page = get(f"{base}/admin/login/")
        assert status == 200 and 'name="username"' in page
        status, body = get(f"{base}/readyz?workers=1", timeout=20)
        report = json.loads(body)
        assert status == 200, body
        assert report["checks"]["worker"]["worker_pid"] != report["web_pid"]
        assert report["checks"]["database"]["ok"] and report["checks"]["channel_layer"]["ok"]

        # and: another command on the same data folder talks to the same database
        shell = subprocess.run(
            [
                *OPENCLAW,
                "--data-dir",
                str(data_dir),
                "shell",
                "--no-imports",
                "-c",
                "from django.contrib.auth.models import User;"
                "print(User.objects.get(username='boss').is_superuser)",
            ],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shell.stdout.strip() == "True", shell.stderr
        assert get(f"{base}/readyz")[0] == 200  # and left up's services running
    finally:
        if process.poll() is None:
            output = stop_and_check_nothing_left(process, data_dir, signal.SIGINT)
            assert "stopped" in output
        else:
            pytest.fail(process.communicate()[0])


def test_sigterm_behaves_like_ctrl_c_and_restart_reuses_the_data(data_dir):
    port = free_port()
    env = clean_env()
    first = start_up(data_dir, port, env)
    wait_ready(f"http://127.0.0.1:{port}", first)
    output = stop_and_check_nothing_left(first, data_dir, signal.SIGTERM)
    assert "created admin account 'admin' with password:" in output

    second = start_up(data_dir, port, env)
    wait_ready(f"http://127.0.0.1:{port}", second)
    output = stop_and_check_nothing_left(second, data_dir, signal.SIGINT)
    assert "created admin account" not in output  # same database, admin kept


@pytest.fixture
def external_database(embedded_services):
    """A database on a PostgreSQL with pgvector reached through DATABASE_URL."""
    pg, _redis = embedded_services
    name = f"oc_dist_{os.getpid()}"
    with psycopg.connect(pg.uri("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg.uri(name)
    with psycopg.connect(pg.uri("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.redis
def test_up_distributed_mode_uses_database_url_and_redis(data_dir, external_database):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(
        DATABASE_URL=external_database,
        REDIS_URL="redis://127.0.0.1:6379/14",
        SECRET_KEY="distributed-test-key-" + "x" * 40,
        OPENCLAW_ENCRYPTION_KEYS=new_key_spec(),
    )
    process = start_up(data_dir, port, env)
    try:
        wait_ready(base, process)
        status, body = get(f"{base}/readyz?workers=1", timeout=20)
        assert status == 200, body
        report = json.loads(body)
        assert report["checks"]["worker"]["worker_pid"] != report["web_pid"]
        # nothing embedded was started
        assert not (data_dir / "postgres").exists()
        assert not (data_dir / "redis").exists()
    finally:
        stop_and_check_nothing_left(process, data_dir, signal.SIGINT)


def _occupied_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize(
    "case",
    [
        "bad_database_url",
        "malformed_database_url",
        "unreachable_redis",
        "unwritable_data_dir",
        "port_in_use",
    ],
)
def test_bad_environment_exits_with_one_clear_line_and_nothing_running(case, data_dir):
    port = free_port()
    target = data_dir
    env = clean_env(SECRET_KEY="k" * 50, OPENCLAW_ENCRYPTION_KEYS=new_key_spec())
    holder = None
    expected = {
        "bad_database_url": "cannot connect to the database in DATABASE_URL",
        "malformed_database_url": "DATABASE_URL must start with postgresql://",
        "unreachable_redis": "cannot reach Redis at REDIS_URL",
        "unwritable_data_dir": "is not writable",
        "port_in_use": f"port {port} on 127.0.0.1 is already in use",
    }[case]
    if case == "bad_database_url":
        env["DATABASE_URL"] = "postgresql://nobody:hunter2@127.0.0.1:1/nothing"
    elif case == "malformed_database_url":
        env["DATABASE_URL"] = "mysql://root@127.0.0.1/openclaw"
    elif case == "unreachable_redis":
        env["REDIS_URL"] = "redis://127.0.0.1:1/0"
    elif case == "unwritable_data_dir":
        (data_dir / "a-file").write_text("not a folder")
        target = data_dir / "a-file" / "data"
    elif case == "port_in_use":
        holder = _occupied_port()
        port = holder.getsockname()[1]
        expected = f"port {port} on 127.0.0.1 is already in use"
    try:
        result = subprocess.run(
            [*OPENCLAW, "up", "--port", str(port), "--data-dir", str(target)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        if holder:
            holder.close()

    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("openclaw: error: ")
    assert expected in lines[0]
    assert "hunter2" not in result.stderr  # no password in messages
    assert "Traceback" not in result.stderr + result.stdout
    assert still_running(list(processes_using(data_dir).values())) == []
