"""Batch job throughput: lines/s of a whole job, submit to completed, through a real
batch worker — with the echo engine (no model: the batch machinery's own ceiling)
and with the tiny on-disk Llama (tests/tiny_models.py) on the transformers engine in
a cpu worker. Prints a table; writes bench/results/batch.json.

    python bench/batch.py [--echo-lines 2000] [--tiny-lines 200] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--echo-lines", type=int, default=2000)
    parser.add_argument("--tiny-lines", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4, help="batch worker threads")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="ocbatch-"))
    os.environ.update(OPENCLAW_DATA_DIR=str(data), DJANGO_SETTINGS_MODULE="openclaw_site.settings",
                      OPENCLAW_LOG_LEVEL="WARNING")
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    from openclaw_site.cli import load_settings
    from openclaw_site.embedded import embedded_services

    settings_module = load_settings()
    try:
        with embedded_services(settings_module):
            results = run(data, args)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    for name, figures in results.items():
        print(f"{name:<8} {figures}")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "batch.json").write_text(json.dumps(results, indent=2))
    print(f"written {out / 'batch.json'}")


def worker(queues: str, concurrency: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "openclaw_site", "worker", "-P", "threads",
         "-c", str(concurrency), "-Q", queues, "-n", f"bench-{queues}@%h", "--without-gossip",
         "--without-mingle", "-l", "WARNING"],
        cwd=REPO, env=dict(os.environ), start_new_session=True)


def lines(model: str, count: int, max_tokens: int) -> bytes:
    return "".join(
        json.dumps({"custom_id": f"{model}-{n}", "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": model, "max_tokens": max_tokens, "temperature": 0,
                             "messages": [{"role": "user",
                                           "content": f"Line {n}: say something short."}]}})
        + "\n" for n in range(count)).encode()


def measure(model: str, count: int, max_tokens: int, chunk_size: int) -> dict:
    from jobs import batch, batch_files
    from jobs.models import BatchJob

    upload = batch_files.create_file(lines(model, count, max_tokens), f"{model}.jsonl")
    started = time.perf_counter()
    job = batch.create_job(upload, chunk_size=chunk_size)
    while not job.finished:
        time.sleep(0.05)
        job = BatchJob.objects.get(pk=job.pk)
    elapsed = time.perf_counter() - started
    running = (job.completed_at - job.in_progress_at).total_seconds()
    return {"lines": count, "status": job.status, "done": job.done, "failed": job.failed,
            "seconds": round(elapsed, 2), "lines_per_s": round(count / elapsed, 1),
            "running_lines_per_s": round(count / running, 1)}


def run(data: Path, args) -> dict:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from routing.models import ModelEndpoint
    from tests.tiny_models import build_tiny_llama

    ModelEndpoint.objects.create(name="echo", engine="echo", max_batch=16)
    folder = build_tiny_llama(data / "tiny")
    ModelEndpoint.objects.create(name="tiny", engine="transformers", model_path=str(folder),
                                 context_window=512, max_batch=8, warm=True)
    workers = [worker("batch", args.concurrency), worker("cpu", 4)]
    try:
        time.sleep(3)  # workers up (the cpu one warms the tiny model)
        measure("echo", 50, args.max_tokens, args.chunk_size)  # warm-up
        results = {"echo": measure("echo", args.echo_lines, args.max_tokens, args.chunk_size)}
        measure("tiny", 16, args.max_tokens, args.chunk_size)  # warm-up
        results["tiny"] = measure("tiny", args.tiny_lines, args.max_tokens, args.chunk_size)
        return results
    finally:  # before the embedded services stop
        for process in workers:
            os.killpg(process.pid, signal.SIGTERM)
        for process in workers:
            process.wait(30)


if __name__ == "__main__":
    main()
