"""Fault drills on a real ``openclaw up`` (its own data folder, embedded PostgreSQL and
Redis, uvicorn, a Celery worker and beat) serving ``/v1`` from the loopback OpenAI
server, under a bounded load (``LOAD_RPS`` requests a second from an async client):

- ``kill -9`` of the postmaster, then of Redis: ``up`` restarts it and ``/readyz``
  answers 200 again within ``RECOVERY_LIMIT_S``; every request answered 200 has its
  usage record; the ``/v1`` errors meanwhile are counted and printed;
- a command (``openclaw keys create``) run while both servers are down, with ``up``
  frozen so it cannot restart them first: the command starts them, ``up`` adopts
  them, and nothing is left running once ``up`` stops.

The three share one ``up`` (starting one costs ~8 s) and run in file order: the last
one stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from openclaw_site.embedded import EmbeddedPostgres, EmbeddedRedis, running_up
from tests.openclaw_site.test_up import (
    OPENCLAW,
    clean_env,
    free_port,
    processes_of,
    processes_using,
    still_running,
    wait_ready,
)

pytestmark = pytest.mark.slow

LOAD_RPS = 10
WARM_S = 1.5  # load before the kill
AFTER_S = 2.0  # load after /readyz is back
RECOVERY_LIMIT_S = 10.0
USAGE_WAIT_S = 30.0

SETUP = """
from routing.keys import create_key
from routing.models import ModelEndpoint
ModelEndpoint.objects.create(name="drill", engine="openai", endpoint_url={url!r},
                             upstream_model="echo")
key, secret = create_key("drill")
print(key.prefix, secret)
"""


@dataclass
class Instance:
    """The ``openclaw up`` under drill."""

    process: subprocess.Popen
    data_dir: Path
    base: str
    prefix: str = ""
    secret: str = ""
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.data_dir / "up.log"

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    @property
    def pg(self) -> EmbeddedPostgres:
        return EmbeddedPostgres(self.data_dir / "postgres")

    @property
    def redis(self) -> EmbeddedRedis:
        return EmbeddedRedis(self.data_dir / "redis")

    def command(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*OPENCLAW, "--data-dir", str(self.data_dir), *argv],
                              env=clean_env(), capture_output=True, text=True, timeout=90)

    def log_events(self, logger: str = "openclaw_site.supervisor") -> list[dict]:
        """The JSON log lines of ``logger``, from every process ``up`` runs."""
        events = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("logger") == logger:
                    events.append(event)
        return events

    def scheduled_task_ran_after(self, when: str) -> bool:
        """Beat sent its tick (every second here) through Redis and the worker ran it,
        reading the database, after ``when`` (a log line's time)."""
        deadline = time.monotonic() + RECOVERY_LIMIT_S
        while time.monotonic() < deadline:
            if any("chat.run_due_schedules[" in e["message"] and "succeeded" in e["message"]
                   and e["time"] > when for e in self.log_events("celery.app.trace")):
                return True
            time.sleep(0.2)
        return False


@pytest.fixture(scope="module")
def instance(openai_server_session):
    data_dir = Path(tempfile.mkdtemp(prefix="ocdrill-"))  # short: unix sockets live in it
    port = free_port()
    with open(data_dir / "up.log", "wb") as log:  # a file: a pipe nobody reads fills up
        process = subprocess.Popen(
            [*OPENCLAW, "up", "--port", str(port), "--data-dir", str(data_dir)],
            # DEBUG: beat's ticks, logged at DEBUG (openclaw_site/celery.py), are the
            # evidence that beat and the worker came back
            env=clean_env(OPENCLAW_SCHEDULE_TICK_S="1", OPENCLAW_LOG_LEVEL="DEBUG"),
            stdout=log, stderr=subprocess.STDOUT)
    up = Instance(process, data_dir, f"http://127.0.0.1:{port}")
    try:
        wait_ready(up.base, process)
        made = up.command("shell", "--no-imports", "-c",
                          SETUP.format(url=openai_server_session.url))
        assert made.returncode == 0, made.stderr
        up.prefix, up.secret = made.stdout.split()[-2:]
        yield up
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(60)
        shutil.rmtree(data_dir, ignore_errors=True)


# --- the load and the measures ---------------------------------------------------------


@dataclass
class Outcome:
    sent_at: float
    status: int  # 0: no answer (connection error, timeout)
    completion_id: str = ""
    error: str = ""


@dataclass
class Drill:
    killed_pid: int
    back_s: float  # kill → the server answers again (a new process)
    ready_s: float  # kill → the first /readyz 200 after that
    outcomes: list[Outcome]

    @property
    def answered(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == 200]

    @property
    def error_bound(self) -> int:
        """No more failures than the requests sent while the server was down, plus one
        second's worth (the clients that found it gone, the reconnections)."""
        return int(LOAD_RPS * (self.back_s + 1.0))

    def errors(self, until_s: float | None = None) -> int:
        return sum(1 for o in self.outcomes
                   if o.status != 200 and (until_s is None or o.sent_at <= until_s))

    def report(self, what: str) -> str:
        failed = [(round(o.sent_at, 2), o.status, o.error) for o in self.outcomes
                  if o.status != 200]
        return (f"{what}: back {self.back_s:.2f} s, /readyz 200 {self.ready_s:.2f} s after the "
                f"kill; /v1 {len(self.outcomes)} requests, {len(self.answered)} answered 200, "
                f"{self.errors()} errors ({self.errors(self.ready_s)} sent before /readyz "
                f"was back){f': {failed[:3]}' if failed else ''}")


async def one_request(client: httpx.AsyncClient, killed_at: list[float]) -> Outcome:
    sent_at = time.monotonic()
    body = {"model": "drill", "messages": [{"role": "user", "content": "are you there"}]}
    try:
        response = await client.post("/v1/chat/completions", json=body)
    except httpx.HTTPError as exc:
        return Outcome(sent_at - killed_at[0], 0, error=repr(exc))
    if response.status_code != 200:
        return Outcome(sent_at - killed_at[0], response.status_code, error=response.text[:200])
    return Outcome(sent_at - killed_at[0], 200, response.json()["id"])


async def load(client: httpx.AsyncClient, stop: asyncio.Event,
               killed_at: list[float]) -> list[Outcome]:
    """``LOAD_RPS`` requests a second, each in its own task: a slow answer does not
    slow the rate down."""
    tasks = []
    while not stop.is_set():
        tasks.append(asyncio.create_task(one_request(client, killed_at)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1 / LOAD_RPS)
    return list(await asyncio.gather(*tasks))


async def ready_after(client: httpx.AsyncClient, since: float) -> float:
    while time.monotonic() - since < RECOVERY_LIMIT_S * 3:
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get("/readyz", timeout=4)).status_code == 200:
                return time.monotonic() - since
        await asyncio.sleep(0.05)
    pytest.fail("/readyz did not answer 200 again")


async def drill(up: Instance, kill: Callable[[], int], current: Callable[[], int | None]) -> Drill:
    """Load, ``kill()`` the server (it returns the pid killed), wait for another process
    to answer for it (``current()``), then for /readyz 200; load a little longer."""
    headers = {"Authorization": f"Bearer {up.secret}"}
    killed_at = [time.monotonic() + WARM_S]  # until the kill: relative to its plan
    async with httpx.AsyncClient(base_url=up.base, headers=headers, timeout=15) as client:
        stop = asyncio.Event()
        traffic = asyncio.create_task(load(client, stop, killed_at))
        await asyncio.sleep(WARM_S)
        killed_pid = kill()
        killed_at[0] = time.monotonic()
        while current() in (None, killed_pid):
            assert time.monotonic() - killed_at[0] < RECOVERY_LIMIT_S * 3, "never restarted"
            await asyncio.sleep(0.02)
        back_s = time.monotonic() - killed_at[0]
        ready_s = await ready_after(client, killed_at[0])
        await asyncio.sleep(AFTER_S)
        stop.set()
        outcomes = await traffic
    return Drill(killed_pid, back_s, ready_s, outcomes)


def usage_records(up: Instance, completion_ids: set[str]) -> set[str]:
    """The ids among ``completion_ids`` that have their usage record, once they all do
    or ``USAGE_WAIT_S`` has passed."""
    deadline = time.monotonic() + USAGE_WAIT_S
    with psycopg.connect(up.pg.uri(), autocommit=True) as conn:
        while True:
            rows = conn.execute("SELECT request_id FROM routing_usagerecord "
                                "WHERE key_prefix = %s", [up.prefix]).fetchall()
            found = {r[0] for r in rows} & completion_ids
            if found == completion_ids or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def kill_postmaster(up: Instance) -> Callable[[], int]:
    def kill() -> int:
        pid = up.pg.postmaster_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        return pid
    return kill


def kill_redis(up: Instance) -> Callable[[], int]:
    def kill() -> int:
        pid = up.redis.running_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        return pid
    return kill


def restarts_logged(up: Instance, service: str, pid: int) -> list[dict]:
    """The supervisor's JSON lines about the server killed: down, then restarted."""
    events = [e for e in up.log_events() if e.get("service") == service]
    down = [i for i, e in enumerate(events) if e.get("event") == "down" and e.get("pid") == pid]
    return events[down[0]:down[0] + 2] if down else []


def figures(line: str) -> None:
    """The drill's measures, shown by ``pytest -s`` (or ``-rP``)."""
    print(line)  # noqa: T201  # the figures README quotes


# --- the drills --------------------------------------------------------------------------


async def test_kill_9_of_postgres_under_load_is_restarted_and_loses_no_usage(instance):
    # when
    result = await drill(instance, kill_postmaster(instance), instance.pg.running_pid)

    # then: back, ready, every answered request recorded
    figures(result.report("PostgreSQL kill -9"))
    assert result.ready_s < RECOVERY_LIMIT_S, result.report("PostgreSQL")
    answered = {o.completion_id for o in result.answered}
    assert len(answered) >= LOAD_RPS * (WARM_S + AFTER_S) * 0.5, result.report("PostgreSQL")
    assert result.errors() <= result.error_bound, result.report("PostgreSQL")
    recorded = usage_records(instance, answered)
    figures(f"PostgreSQL kill -9: usage records {len(recorded)} of {len(answered)}")
    assert recorded == answered, f"{len(answered - recorded)} usage records lost"
    # and: the supervisor said so, in JSON
    events = restarts_logged(instance, "PostgreSQL", result.killed_pid)
    assert [e["event"] for e in events] == ["down", "restarted"], events
    figures(f"PostgreSQL kill -9: supervisor restart took {events[1]['restart_s']} s")
    # and: the worker's database connections came back too
    assert instance.scheduled_task_ran_after(events[1]["time"])


async def test_kill_9_of_redis_under_load_is_restarted_and_errors_are_bounded(instance):
    # when
    result = await drill(instance, kill_redis(instance), instance.redis.running_pid)

    # then
    figures(result.report("Redis kill -9"))
    assert result.ready_s < RECOVERY_LIMIT_S, result.report("Redis")
    answered = {o.completion_id for o in result.answered}
    recorded = usage_records(instance, answered)
    figures(f"Redis kill -9: usage records {len(recorded)} of {len(answered)}")
    # after /readyz is back, /v1 answers again: no error among the requests sent then
    late = [o for o in result.outcomes if o.sent_at > result.ready_s + 0.5]
    assert late and all(o.status == 200 for o in late), result.report("Redis")
    assert result.errors() <= result.error_bound, result.report("Redis")
    assert recorded == answered, f"{len(answered - recorded)} usage records lost"
    events = restarts_logged(instance, "Redis", result.killed_pid)
    assert [e["event"] for e in events] == ["down", "restarted"], events
    figures(f"Redis kill -9: supervisor restart took {events[1]['restart_s']} s")
    # and: beat and the worker reconnected to the broker
    assert instance.scheduled_task_ran_after(events[1]["time"])


def test_a_command_run_while_the_servers_are_down_leaves_nothing_once_up_stops(instance):
    # given: up frozen, so it cannot restart what dies; both servers killed
    up = instance.process
    assert running_up(instance.data_dir) == {"pid": up.pid, "port": instance.port,
                                             "embedded": ["postgres", "redis"]}
    before = processes_of(instance.data_dir, psutil.Process(up.pid))
    killed = {instance.pg.postmaster_pid(), instance.redis.running_pid()}
    os.kill(up.pid, signal.SIGSTOP)
    try:
        for pid in killed:
            os.kill(pid, signal.SIGKILL)

        # when: a command that needs both
        made = instance.command("keys", "create", "--name", "while-down")

        # then: it started them (clearing what the kill left), did its work and left
        # them to up, which supervises them
        assert made.returncode == 0, made.stderr
        started = {instance.pg.running_pid(), instance.redis.running_pid()}
        assert None not in started and not started & killed
        assert made.stderr.count("left to the running `openclaw up`") == 2, made.stderr
    finally:
        os.kill(up.pid, signal.SIGCONT)

    # and: up adopts them; the web server uses them, with the command's key
    deadline = time.monotonic() + RECOVERY_LIMIT_S
    while len([e for e in instance.log_events() if e.get("event") == "adopted"]) < 2:
        assert time.monotonic() < deadline, instance.log_events()[-4:]
        time.sleep(0.1)
    wait_ready(instance.base, up)
    secret = made.stdout.split()[-1]
    answer = httpx.post(f"{instance.base}/v1/chat/completions", timeout=15,
                        headers={"Authorization": f"Bearer {secret}"},
                        json={"model": "drill", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.text

    # when: up stops
    procs = before + [psutil.Process(pid) for pid in started]
    up.send_signal(signal.SIGINT)
    assert up.wait(60) == 0, instance.log.read_text()[-2000:]

    # then: nothing it ran, adopted or that the command started is left
    deadline = time.monotonic() + 10
    while still_running(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert still_running(procs) == []
    assert still_running(list(processes_using(instance.data_dir).values())) == []
