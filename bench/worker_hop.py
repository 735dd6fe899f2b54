"""First-token cost of running a local engine on a Celery worker.

Time to first token of the tiny on-disk Llama (tests/tiny_models.py) called
in-process, against the same model called from this process through a real
worker process (task over the broker, deltas back over the channel layer).
The difference is the hop. Prints a table; writes bench/results/worker_hop.json.

    python bench/worker_hop.py [--n 100]
"""

from __future__ import annotations

import argparse
import asyncio
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

from bench.stats import latency_summary  # noqa: E402


async def ttft(engine, n: int) -> list[float]:
    from inference.engines.base import ChatRequest

    times = []
    for i in range(n + 5):
        request = ChatRequest(messages=[{"role": "user", "content": f"Hello {i}"}],
                              max_tokens=2, temperature=0)
        started = time.perf_counter()
        stream = engine.stream(request)
        await stream.__anext__()
        elapsed = (time.perf_counter() - started) * 1000
        async for _ in stream:  # drain
            pass
        if i >= 5:  # warm-up excluded
            times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="ochop-"))
    os.environ.update(OPENCLAW_DATA_DIR=str(data), DJANGO_SETTINGS_MODULE="openclaw_site.settings")
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    from openclaw_site.cli import load_settings
    from openclaw_site.embedded import embedded_services

    settings_module = load_settings()
    try:
        with embedded_services(settings_module):
            results = run(data, args.n)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    results["hop_p50_ms"] = round(results["worker"]["p50_ms"] - results["in_process"]["p50_ms"], 2)
    for name, figures in results.items():
        print(f"{name:<12} {figures}")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "worker_hop.json").write_text(json.dumps(results, indent=2))
    print(f"written {out / 'worker_hop.json'}")


def run(data: Path, n: int):
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from inference.registry import build_engine, build_local_engine
    from routing.models import ModelEndpoint
    from routing.services import endpoint_config
    from tests.tiny_models import build_tiny_llama

    folder = build_tiny_llama(data / "tiny")
    endpoint = ModelEndpoint.objects.create(name="tiny", engine="transformers",
                                            model_path=str(folder), context_window=512)
    config = endpoint_config(endpoint)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "openclaw_site", "worker", "-P", "threads",
         "-c", "4", "-Q", "cpu", "--without-gossip", "--without-mingle", "-l", "WARNING"],
        cwd=REPO, env=dict(os.environ), start_new_session=True)

    async def measure() -> dict:
        local = build_local_engine(config)
        await local.load()
        in_process = await ttft(local, n)
        await local.aclose()
        via_worker = await ttft(build_engine(config), n)
        return {"in_process": latency_summary(in_process), "worker": latency_summary(via_worker)}

    try:
        return asyncio.run(measure())
    finally:  # before the embedded services stop
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)


if __name__ == "__main__":
    main()
