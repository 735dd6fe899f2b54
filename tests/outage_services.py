"""Services an outage test may stop and start without touching the session's: a private
Redis on a loopback port, a private PostgreSQL holding a copy of the test database, a
web server and a Celery worker pointed at them (``tests/settings.py`` reads
``OPENCLAW_TEST_REDIS_URL``, ``OPENCLAW_TEST_WORKER_DB`` and
``OPENCLAW_TEST_WORKER_DB_HOST``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis
from celery import Celery

from openclaw_site.embedded import PG_SYSTEM_USER, EmbeddedPostgres, redis_server_binary
from openclaw_site.processes import web_argv
from tests.conftest import REPO, WorkerProcess


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout: float, what: str, interval: float = 0.05):
    """``check()``'s first truthy value, or a failure after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


class PrivateRedis:
    """The embedded mode's redis-server binary on a loopback port, its append-only file
    synced on every write (a kill -9 loses nothing it acknowledged)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> PrivateRedis:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(redis_server_binary()), "--bind", "127.0.0.1", "--port", str(self.port),
                 "--dir", str(self.folder), "--save", "", "--appendonly", "yes",
                 "--appendfsync", "always", "--daemonize", "no"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        wait_for(self.answers, 10, "the private Redis answering")
        return self

    def answers(self) -> bool:
        try:
            with redis.Redis.from_url(self.url, socket_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class PrivatePostgres:
    """The embedded PostgreSQL in a folder of its own, holding a copy (``pg_dump``) of a
    database of the session's server."""

    def __init__(self, folder: Path, database: str = "outage"):
        self.server = EmbeddedPostgres(folder, database)
        self.database = database
        self.folder = folder

    def start(self) -> PrivatePostgres:
        self.server.start()
        return self

    def copy_from(self, uri: str) -> None:
        """Schema and rows of the database at ``uri``, restored here."""
        bin_dir = self.server.bin_dir
        dump = subprocess.run([str(bin_dir / "pg_dump"), "-Fc", "-d", uri],
                              capture_output=True, check=True, timeout=60)
        subprocess.run([str(bin_dir / "pg_restore"), "--no-owner", "-d",
                        self.server.uri()], input=dump.stdout, capture_output=True,
                       check=True, timeout=60)

    def crash(self) -> None:
        """Stop at once, as a crash would (no checkpoint; recovery on the next start);
        every client's connection is cut."""
        subprocess.run([str(self.server.bin_dir / "pg_ctl"), "-D", str(self.folder), "-m",
                        "immediate", "-w", "stop"],
                       user=PG_SYSTEM_USER if os.geteuid() == 0 else None,
                       capture_output=True, check=True, timeout=30)

    def uri(self) -> str:
        return self.server.uri()

    def stop(self) -> None:
        self.server.stop()


class WebServer:
    """``openclaw web``'s uvicorn in a subprocess, with extra environment."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings",
                        PYTHONUNBUFFERED="1", **env)
        self.log_path = log_dir / f"web-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def spawn(self) -> WebServer:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                web_argv("127.0.0.1", self.port), env=self.env, cwd=REPO, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 30) -> WebServer:
        def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, \
                self.log_path.read_text()[-3000:]
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(ready, timeout, f"the web server (see {self.log_path})", 0.1)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class PrivateWorker(WorkerProcess):
    """A real Celery worker whose broker may be a private Redis (pinged there)."""

    def __init__(self, broker: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.broker = broker

    def wait_ready(self, timeout: float = 60) -> PrivateWorker:
        from openclaw_site.celery import app

        # not set as current: the tests' own tasks must keep going to the session broker
        probe = Celery(broker=self.broker, set_as_current=False) if self.broker else app
        try:
            def answers() -> bool:
                assert self.process is not None and self.process.poll() is None, \
                    self.log_path.read_text()[-3000:]
                return bool(probe.control.ping(destination=[self.name], timeout=0.5))
            wait_for(answers, timeout, f"the worker (see {self.log_path})", 0)
        finally:
            if probe is not app:
                probe.close()
        return self
