"""Session fixtures: the embedded PostgreSQL + pgvector and Redis that the
settings point at, started once for the run and stopped after it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from openclaw_site.embedded import EmbeddedPostgres, EmbeddedRedis

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def embedded_services():
    from django.conf import settings

    pg = EmbeddedPostgres(settings.EMBEDDED_PG_DIR, settings.EMBEDDED_DB_NAME)
    redis = EmbeddedRedis(settings.EMBEDDED_REDIS_DIR)
    pg.start()
    redis.start(tie_to_parent=True)
    yield pg, redis
    from django.db import connections

    connections.close_all()
    redis.stop()
    pg.stop()
    shutil.rmtree(settings.DATA_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def english_at_start():
    """Each test starts in English: a request through the test client that chose
    another language (``?lang=zh-hans``) leaves it active in this thread, and model
    fields registered with modeltranslation would then be written in that language."""
    from django.utils import translation

    translation.activate("en")
    yield
    translation.activate("en")


@pytest.fixture(autouse=True)
def fresh_state():
    """Each test reads the routing table, the API keys, the plugin chain and the
    workflow plans afresh: every process keeps copies of them (``core.snapshot``) that a
    token bumped when a change commits invalidates, and most tests' changes never
    commit (they are rolled back). Before and after: this process's copies dropped,
    every process's tokens replaced, and no token left "already read" in this thread's
    context (asgiref copies a context's changes back to the caller)."""
    from core import shared_state, snapshot

    def reset() -> None:
        snapshot.clear_all()
        snapshot.bump_all()
        shared_state.forget()

    reset()
    yield
    reset()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(embedded_services):
    """The test database lives in the embedded server started above."""


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, embedded_services):
    """pytest-django's set-up; before its teardown drops the test database, end the
    sessions still open on it (pooled connections of async tests' threads, workers)."""
    yield
    import psycopg
    from django.db import connection, connections

    connections.close_all()
    pg, _redis = embedded_services
    with psycopg.connect(pg.uri("postgres"), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s AND pid <> pg_backend_pid()",
                      [connection.settings_dict["NAME"]])


class WorkerProcess:
    """A real Celery worker process on the test settings' broker."""

    def __init__(self, queues: str = "default,cpu,batch", concurrency: int = 2,
                 database: str | None = None, name: str | None = None,
                 env: dict[str, str] | None = None):
        self.queues, self.concurrency, self.database = queues, concurrency, database
        self.extra_env = env or {}
        self.name = name or f"test-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        self.process: subprocess.Popen | None = None
        self.log_path = Path(os.environ["OPENCLAW_TEST_DATA_DIR"]) / f"{self.name}.log"

    def start(self, timeout: float = 60) -> WorkerProcess:
        self.spawn()
        assert self.process is not None  # spawned
        from openclaw_site.celery import app

        deadline = time.monotonic() + timeout
        while not app.control.ping(destination=[self.name], timeout=0.5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"celery worker did not start; see {self.log_path}")
        return self

    def spawn(self) -> WorkerProcess:
        """Start the worker process (not waiting for it to answer)."""
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", PYTHONUNBUFFERED="1",
                   OPENCLAW_POOL_RECONCILE_S="1")
        if self.database:
            env["OPENCLAW_TEST_WORKER_DB"] = self.database
        env.update(self.extra_env)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "openclaw_site", "worker", "-P",
                 "threads", "-c", str(self.concurrency), "-Q", self.queues, "-n", self.name,
                 "--without-gossip", "--without-mingle", "-l", "INFO"],
                env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def celery_worker_process(embedded_services):
    """A worker for the session: the default queue (pings), no engines."""
    worker = WorkerProcess(queues="default").start()  # not cpu/gpu: those are each test's own
    yield worker.process
    worker.stop()


@pytest.fixture
def start_worker(transactional_db):
    """Start workers that read the test database; all are stopped after the test."""
    from django.db import connection

    workers: list[WorkerProcess] = []

    def start(**kwargs) -> WorkerProcess:
        worker = WorkerProcess(database=connection.settings_dict["NAME"], **kwargs).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture(scope="session")
def openai_server_session():
    """One loopback OpenAI-compatible server for the whole run (a thread of its own)."""
    from tests.openai_server import OpenAIServer

    with OpenAIServer() as server:
        yield server


@pytest.fixture
def openai_server(openai_server_session):
    """The session's server, with earlier tests' requests and flaky counters forgotten."""
    openai_server_session.reset()
    return openai_server_session
