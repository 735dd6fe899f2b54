"""Fixtures for the chat tests: a live web server (``openclaw web``'s uvicorn)
serving OpenClaw on the test database (the loopback backend, ``openai_server``,
is in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chat.graph import checkpointer
from openclaw_site.processes import web_argv

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_recall(settings):
    """Long-term memory off (it has its own tests): recall finds nothing to add."""
    settings.OPENCLAW_MEMORY_TOP_K = 0


@pytest.fixture
async def closed_saver():
    """The checkpointer's connection pool, opened on this test's event loop, closed
    with it."""
    yield
    await checkpointer.close_saver()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def live_server_url(django_db_setup, django_db_blocker) -> Iterator[str]:
    """The web server in a subprocess, reading the test database; its base URL."""
    with web_server() as (url, _log_path):
        yield url


@contextlib.contextmanager
def web_server(name: str = "web", **env_extra: str) -> Iterator[tuple[str, Path]]:
    """``openclaw web``'s uvicorn in a subprocess on the test database (``env_extra``
    added to its environment), until it answers ``/healthz``; its base URL and its log
    file. Stopped on leaving."""
    from django.db import connection

    port = _free_port()
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", PYTHONUNBUFFERED="1",
               OPENCLAW_TEST_WORKER_DB=connection.settings_dict["NAME"], **env_extra)
    log_path = Path(os.environ["OPENCLAW_TEST_DATA_DIR"]) / f"{name}-{port}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            web_argv("127.0.0.1", port),
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the web server did not start; see {log_path}:\n"
                        f"{log_path.read_text()[-3000:]}")
        time.sleep(0.1)
    try:
        yield url, log_path
    finally:
        stop_server(process)


def stop_server(process: subprocess.Popen, timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``."""
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
