"""The command lines and environment of the processes ``openclaw up`` supervises and
``openclaw web|worker|beat`` become: the web server, a Celery worker, Celery beat."""

from __future__ import annotations

import os
import sys
from types import ModuleType


def child_env(settings_module: ModuleType) -> dict[str, str]:
    env = dict(os.environ)
    env["OPENCLAW_DATA_DIR"] = str(settings_module.DATA_DIR)
    env.setdefault("DJANGO_SETTINGS_MODULE", "openclaw_site.settings")
    env["PYTHONUNBUFFERED"] = "1"
    # No progress bars (a model's load, a download): nobody watches a server's stderr,
    # and a worker logs each redraw as a JSON warning line.
    env.setdefault("TQDM_DISABLE", "1")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return env


def web_argv(host: str, port: int) -> list[str]:
    """The web server: uvicorn on uvloop + httptools. (daphne serves the same ASGI app,
    but its HTTP layer alone caps a bare proxy at about 1,700 req/s on 2 cores where
    uvicorn does 6,700 — see README, "Benchmarks".) Forwarded headers are not applied
    by the server: ``OPENCLAW_TRUSTED_PROXIES`` decides whom to believe. Websocket
    frames are not compressed: the studio's are small (a token, a node's timing), and
    deflating each one cost more CPU than it saved bytes."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        host,
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--ws",
        "websockets-sansio",
        "--ws-per-message-deflate",
        "false",
        "--no-proxy-headers",
        "--no-access-log",
        "--lifespan",
        "off",
        "--timeout-graceful-shutdown",
        "10",
        "openclaw_site.asgi:application",
    ]


def worker_argv(queues: str, pool: str, concurrency: int, name: str,
                log_level: str = "INFO") -> list[str]:
    """A Celery worker logging at ``log_level`` (``OPENCLAW_LOG_LEVEL``): Celery sets
    the root logger's level from ``-l``, over the settings' ``LOGGING``."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "openclaw_site",
        "worker",
        "-Q",
        queues,
        "-P",
        pool,
        "-c",
        str(concurrency),
        "-n",
        name,
        "-l",
        log_level,
        "--without-gossip",
        "--without-mingle",
    ]


def beat_argv(schedule_file: str, log_level: str = "INFO") -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "openclaw_site",
        "beat",
        "-s",
        schedule_file,
        "-l",
        log_level,
    ]
