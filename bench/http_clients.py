"""httpx.AsyncClient against aiohttp (and the ``openai`` engine, now built on aiohttp)
talking to the loopback OpenAI-compatible server (tests/openai_server.py, run
as a subprocess). Prints a table and writes bench/results/http_clients.json.

    python bench/http_clients.py [--seconds 3] [--streams 200]

Measured for each client:
  non-streaming chat completions at concurrency 1 and 16, for --seconds each:
      requests/s, p50 and p99 latency
  streaming (16 tokens, no delay), --streams times one after the other, then
  16 at a time: time to first content token (p50, p99) and to [DONE] (p50)

These figures made the engine move from httpx to aiohttp. httpx2 (pydantic's fork of httpx, which
langsmith pulls in) is measured when importable. Both sides share the
machine's cores, so the figures compare clients, not servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from bench.stats import percentile  # noqa: E402
from inference.engines import openai as openai_engine  # noqa: E402
from inference.engines.base import ChatRequest, EndpointConfig  # noqa: E402

try:
    import aiohttp
except ImportError:  # optional: the bench reports what it can
    aiohttp = None
try:
    import httpx2
except ImportError:
    httpx2 = None

MESSAGES = [{"role": "user", "content": "hello big world"}]
CHAT_BODY = {"model": "echo", "messages": MESSAGES, "max_tokens": 16}
STREAM_BODY = {"model": "tokens-16", "messages": MESSAGES, "stream": True,
               "stream_options": {"include_usage": True}}
CONCURRENCIES = (1, 16)

Call = Callable[[], Awaitable[None]]
StreamCall = Callable[[], Awaitable[tuple[float, float]]]  # (first token, done) seconds



def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.openai_server", "--port", str(port)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=1):
                return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the loopback server did not start") from None
            time.sleep(0.05)


async def run_load(call: Call, concurrency: int, seconds: float) -> dict:
    """``concurrency`` workers calling in a loop for ``seconds`` (after a short warm-up)."""
    latencies: list[float] = []
    stop_at = 0.0

    async def worker(record: bool) -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await call()
            if record:
                latencies.append(time.perf_counter() - started)

    stop_at = time.perf_counter() + 0.3
    await asyncio.gather(*(worker(False) for _ in range(concurrency)))
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(worker(True) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
    }


async def run_streams(call: StreamCall, count: int, concurrency: int = 1) -> dict:
    """``count`` streams per worker, ``concurrency`` workers at a time."""
    firsts: list[float] = []
    dones: list[float] = []

    async def worker(repeat: int, record: bool) -> None:
        for _ in range(repeat):
            first, done = await call()
            if record:
                firsts.append(first)
                dones.append(done)

    await asyncio.gather(*(worker(10, False) for _ in range(concurrency)))  # warm-up
    started = time.perf_counter()
    await asyncio.gather(*(worker(count, True) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "streams": len(firsts),
        "streams_per_s": round(len(firsts) / elapsed, 1),
        "ttft_p50_ms": round(statistics.median(firsts) * 1000, 3),
        "ttft_p99_ms": round(percentile(firsts, 0.99) * 1000, 3),
        "done_p50_ms": round(statistics.median(dones) * 1000, 3),
    }


def has_content(buffer: bytes) -> bool:
    """Whether a complete SSE event with delta content has arrived."""
    for event in buffer.split(b"\n\n")[:-1]:
        data = event.removeprefix(b"data: ")
        if data != b"[DONE]":
            choices = json.loads(data).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                return True
    return False


# -- the clients ---------------------------------------------------------------------------


def httpx_calls(client: httpx.AsyncClient, url: str) -> tuple[Call, StreamCall]:
    """Also for httpx2, whose API is the same."""
    async def call() -> None:
        response = await client.post(f"{url}/chat/completions", json=CHAT_BODY)
        response.json()

    async def stream() -> tuple[float, float]:
        started, first, buffer = time.perf_counter(), 0.0, b""
        async with client.stream("POST", f"{url}/chat/completions", json=STREAM_BODY) as r:
            async for chunk in r.aiter_bytes():
                buffer += chunk
                if not first and has_content(buffer):
                    first = time.perf_counter() - started
        return first, time.perf_counter() - started

    return call, stream


def aiohttp_calls(session: aiohttp.ClientSession, url: str) -> tuple[Call, StreamCall]:
    async def call() -> None:
        async with session.post(f"{url}/chat/completions", json=CHAT_BODY) as response:
            await response.json()

    async def stream() -> tuple[float, float]:
        started, first, buffer = time.perf_counter(), 0.0, b""
        async with session.post(f"{url}/chat/completions", json=STREAM_BODY) as response:
            async for chunk in response.content.iter_any():
                buffer += chunk
                if not first and has_content(buffer):
                    first = time.perf_counter() - started
        return first, time.perf_counter() - started

    return call, stream


def engine_calls(url: str) -> tuple[Call, StreamCall]:
    engine = openai_engine.OpenAIEngine(EndpointConfig(
        id=None, name="bench", engine="openai", url=url, upstream_model="echo",
        max_output_tokens=16))
    streamer = openai_engine.OpenAIEngine(EndpointConfig(
        id=None, name="bench", engine="openai", url=url, upstream_model="tokens-16"))

    async def call() -> None:
        await engine.generate(ChatRequest(messages=MESSAGES))

    async def stream() -> tuple[float, float]:
        started, first = time.perf_counter(), 0.0
        async for delta in streamer.stream(ChatRequest(messages=MESSAGES)):
            if not first and delta.text:
                first = time.perf_counter() - started
        return first, time.perf_counter() - started

    return call, stream


async def measure(name: str, calls: tuple[Call, StreamCall], seconds: float,
                  streams: int) -> dict:
    call, stream = calls
    figures: dict = {}
    for concurrency in CONCURRENCIES:
        figures[f"c{concurrency}"] = await run_load(call, concurrency, seconds)
        print(f"  {name} c={concurrency}: {figures[f'c{concurrency}']}", flush=True)
    figures["stream"] = await run_streams(stream, streams)
    figures["stream_c16"] = await run_streams(stream, max(1, streams // 16), 16)
    print(f"  {name} stream: {figures['stream']}", flush=True)
    print(f"  {name} stream c=16: {figures['stream_c16']}", flush=True)
    return figures


async def bench(url: str, seconds: float, streams: int) -> dict:
    results: dict = {}
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        results["httpx"] = await measure("httpx", httpx_calls(client, url), seconds, streams)
    if httpx2 is not None:
        limits2 = httpx2.Limits(max_connections=512, max_keepalive_connections=256)
        async with httpx2.AsyncClient(limits=limits2, timeout=30) as client2:
            results["httpx2"] = await measure("httpx2", httpx_calls(client2, url), seconds,
                                              streams)
    if aiohttp is not None:
        connector = aiohttp.TCPConnector(limit=512)
        async with aiohttp.ClientSession(connector=connector) as session:
            results["aiohttp"] = await measure("aiohttp", aiohttp_calls(session, url),
                                               seconds, streams)
    else:
        print("  (aiohttp not installed: skipped)")
    results["openai-engine"] = await measure("openai-engine", engine_calls(url), seconds,
                                             streams)
    await openai_engine.aclose_clients()
    return results


def print_table(results: dict) -> None:
    header = (f"{'client':<14} {'c1 rps':>8} {'c1 p50':>7} {'c1 p99':>7} {'c16 rps':>8} "
              f"{'c16 p50':>8} {'c16 p99':>8} {'ttft p50':>9} {'ttft p99':>9} "
              f"{'c16 ttft p50':>13} {'c16 ttft p99':>13} {'c16 str/s':>10}")
    print(header)
    print("-" * len(header))
    for name, f in results.items():
        c1, c16, s, sc = f["c1"], f["c16"], f["stream"], f["stream_c16"]
        print(f"{name:<14} {c1['rps']:>8} {c1['p50_ms']:>7.2f} {c1['p99_ms']:>7.2f} "
              f"{c16['rps']:>8} {c16['p50_ms']:>8.2f} {c16['p99_ms']:>8.2f} "
              f"{s['ttft_p50_ms']:>9.2f} {s['ttft_p99_ms']:>9.2f} "
              f"{sc['ttft_p50_ms']:>13.2f} {sc['ttft_p99_ms']:>13.2f} {sc['streams_per_s']:>10}")
    print("(latencies in ms; c16 = 16 requests or streams in flight)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--streams", type=int, default=200)
    args = parser.parse_args()
    server, url = start_server()
    try:
        results = asyncio.run(bench(url, args.seconds, args.streams))
    finally:
        server.terminate()
        server.wait(10)
    print_table(results)
    results["_environment"] = {
        "python": platform.python_version(),
        "httpx": httpx.__version__,
        "aiohttp": aiohttp.__version__ if aiohttp is not None else None,
        "httpx2": httpx2.__version__ if httpx2 is not None else None,
        "cpus": os.cpu_count(),
        "seconds_per_load": args.seconds,
        "server": "tests/openai_server.py, one process, same machine",
    }
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "http_clients.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out / 'http_clients.json'}")


if __name__ == "__main__":
    main()
