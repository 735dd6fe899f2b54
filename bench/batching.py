"""Dynamic batching in the ``transformers`` engine: tokens/s with batching on and
off at concurrency 1, 4 and 8, on the tiny test Llama (2 layers, hidden 64)
built into a temporary folder. Prints a table and the on/off ratio at each
concurrency; writes bench/results/batching.json.

    python bench/batching.py [--tokens 64] [--rounds 5] [--torch-threads 1]

Each round starts ``concurrency`` requests at once and counts the completion
tokens streamed back over the wall time of the round; the figure is the median
of the rounds, after one warm-up round per setting; the on and off rounds
alternate. The engines run in this process's event loop, as in a worker (no
Celery, no network).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from inference.engines.base import ChatRequest, EndpointConfig  # noqa: E402
from inference.engines.transformers import TransformersEngine  # noqa: E402
from tests.tiny_models import build_tiny_llama  # noqa: E402

CONCURRENCY = [1, 4, 8]
PROMPTS = ["The quick brown fox", "Hello world", "Tokens stream back",
           "OpenClaw routes every request to the right model."]


async def one_round(engine: TransformersEngine, concurrency: int, tokens: int) -> tuple[float, int]:
    """Tokens/s of ``concurrency`` requests started together, and the tokens counted."""

    async def consume(i: int) -> int:
        request = ChatRequest(messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                              max_tokens=tokens, request_id=f"r{i}")
        count = 0
        async for delta in engine.stream(request):
            count += delta.tokens
        return count

    started = time.perf_counter()
    counts = await asyncio.gather(*(consume(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    return sum(counts) / elapsed, sum(counts)


async def measure(folder: Path, tokens: int, rounds: int,
                  threads: int) -> dict[str, dict[str, dict]]:
    """Both engines loaded side by side; their rounds alternate, so a change in the
    machine's load (a shared 2-core box) falls on both modes alike."""
    engines = {mode: TransformersEngine(EndpointConfig(
        id=None, name=f"tiny-{mode}", engine="transformers", path=str(folder), max_batch=8,
        params={"batching": mode == "on", "torch_threads": threads}))
        for mode in ("on", "off")}
    for engine in engines.values():
        await engine.load()
    results: dict[str, dict[str, dict]] = {mode: {} for mode in engines}
    try:
        for concurrency in CONCURRENCY:
            for engine in engines.values():
                await one_round(engine, concurrency, tokens)  # warm-up
            before = {mode: (e.stats.batches, e.stats.steps) for mode, e in engines.items()}
            rates: dict[str, list[float]] = {mode: [] for mode in engines}
            for _ in range(rounds):
                for mode, engine in engines.items():
                    rates[mode].append((await one_round(engine, concurrency, tokens))[0])
            for mode, engine in engines.items():
                results[mode][str(concurrency)] = summary(rates[mode], engine, before[mode])
    finally:
        for engine in engines.values():
            await engine.aclose()
    return results


def summary(rates: list[float], engine: TransformersEngine, before: tuple[int, int]) -> dict:
    return {
        "tokens_per_s": round(statistics.median(rates), 1),
        "best_tokens_per_s": round(max(rates), 1),
        "rounds": [round(r, 1) for r in rates],
        "batches": engine.stats.batches - before[0],
        "forward_passes": engine.stats.steps - before[1],
    }


def report(results: dict[str, dict], tokens: int, threads: int) -> dict[str, float]:
    print(f"\ntransformers engine, tiny Llama, {tokens} tokens per request, torch threads: "
          f"{threads or 'default'}; median tokens/s")
    print(f"{'concurrency':>11} {'batching on':>12} {'batching off':>13} {'on/off':>7}")
    ratios = {}
    for concurrency in map(str, CONCURRENCY):
        on = results["on"][concurrency]["tokens_per_s"]
        off = results["off"][concurrency]["tokens_per_s"]
        ratios[concurrency] = round(on / off, 2)
        print(f"{concurrency:>11} {on:>12.0f} {off:>13.0f} {ratios[concurrency]:>6.2f}x")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads (0: torch's default); the two engines "
                             "run torch from two threads, which the default slows down")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="openclaw-bench-") as tmp:
        folder = build_tiny_llama(Path(tmp) / "tiny-llama")
        results = asyncio.run(measure(folder, args.tokens, args.rounds, args.torch_threads))
    ratios = report(results, args.tokens, args.torch_threads)
    target = ratios["8"] >= 3
    print(f"target: batching on at 8 >= 3x off at 8: {'met' if target else 'NOT met'}")
    out = REPO / "bench" / "results" / "batching.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "tokens_per_request": args.tokens, "rounds": args.rounds,
        "torch_threads_option": args.torch_threads, "results": results,
        "on_off_ratio": ratios, "target_met": target,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version()},
    }, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
