"""The studio websocket: OpenClaw's time to first token over ``/ws/chat/`` minus the
engine's own, and how many concurrent streaming sessions one web process holds, with
its memory per connection. Prints the figures and writes bench/results/ws.json.

    python bench/ws.py [--turns 200] [--rounds 4] [--levels 10,50,200] [--idle 500] [--recall]
                       [--fast-sockets 20] [--fast-tokens 2000]

It starts ``openclaw up`` (uvicorn, a Celery worker, embedded PostgreSQL and Redis)
in a temporary data folder and the loopback OpenAI server (tests/openai_server.py) as
the engine, registers it as a model and makes an API key for the websocket client.

* TTFT: ``--turns`` sequential turns on one socket (the full conversation graph:
  store the message, window, plugins, routing, stream, store the answer), from
  sending ``message`` to the first ``token`` frame; the engine's own TTFT is the
  same prompt streamed from the backend directly. Both are measured back to back
  (the next sample starts when the previous one has ended), in ``--rounds``
  alternating blocks so that the machine's drifting load reaches both alike. (With
  idle pauses between turns every figure is higher: a CPU that has idled for 20 ms
  serves the next request slower, and this path does more work than the engine's.)
  Long-term recall is off unless ``--recall`` (it embeds the message on the CPU
  before the model is called).
* Concurrency: at each level, that many sockets each stream a 40-token answer
  (one token every 50 ms) at once; a level is held when every session completes
  with all its tokens. The web process's RSS is sampled while they stream, and its
  CPU time per session taken (a session: connect, one turn, close).
* Relay throughput: ``--fast-sockets`` sockets, already open, each ask at once for a
  ``--fast-tokens``-token answer that the engine writes as fast as it can; tokens
  delivered (the words of each answer, checked against its ``done`` content) per
  second of wall time, from sending the messages to the last ``done`` (and over the
  streaming window alone, first token to last). The frames each answer took show the
  coalescing. So that the engine is not the limit, the same streams are also read
  straight from the backend, and each process's CPU share during the run is reported
  (the web process's event loop is one core at most).
* Memory per connection: ``--idle`` idle authenticated sockets, RSS before/after.

Everything shares the machine's cores (client, backend, web process, database), so
the figures are for this machine, not absolute capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

import httpx  # noqa: E402
import psutil  # noqa: E402
import websockets  # noqa: E402

from bench.gateway import (  # noqa: E402
    free_port,
    openclaw_bin,
    spawn,
    stop,
    wait_http,
)
from bench.stats import latency_summary, percentile  # noqa: E402

RESULTS = REPO / "bench" / "results"
PROMPT = "hello big world"
STREAM_MODEL = "slow-50+tokens-40"
STREAM_TOKENS = 40


def fast_model(tokens: int) -> str:
    return f"tokens-{tokens}"


def start(tmp: Path, recall: bool, fast_tokens: int = 2000) -> tuple:
    """The loopback backend and ``openclaw up``; (processes, base URL, backend URL, key)."""
    import subprocess

    backend_port, port = free_port(), free_port()
    backend = spawn([sys.executable, "-m", "tests.openai_server", "--port", str(backend_port)],
                    tmp / "backend.log")
    backend_url = f"http://127.0.0.1:{backend_port}"
    wait_http(f"{backend_url}/health", backend, 30, "the loopback backend")
    data = tmp / "openclaw-data"
    env = dict(os.environ, OPENCLAW_DATA_DIR=str(data),
               OPENCLAW_MEMORY_TOP_K=os.environ.get("OPENCLAW_MEMORY_TOP_K",
                                                    "5" if recall else "0"),
               OPENCLAW_WS_RATE="1000", OPENCLAW_WS_BURST="1000")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    cli = openclaw_bin()
    web = spawn([cli, "up", "--data-dir", str(data), "--port", str(port)],
                tmp / "openclaw.log", env)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/readyz", web, 180, "openclaw up")
    config = tmp / "models.yaml"
    config.write_text(
        "models:\n"
        f"  - name: bench\n    type: remote\n    engine: openai\n    model: bench\n"
        f"    endpoint: {backend_url}/v1\n"
        f"  - name: stream\n    type: remote\n    engine: openai\n    model: {STREAM_MODEL}\n"
        f"    endpoint: {backend_url}/v1\n"
        f"  - name: fast\n    type: remote\n    engine: openai\n"
        f"    model: {fast_model(fast_tokens)}\n    endpoint: {backend_url}/v1\n",
        encoding="utf-8")
    subprocess.run([cli, "--data-dir", str(data), "config", "apply", str(config)],
                   check=True, env=env, cwd=REPO, capture_output=True, text=True)
    created = subprocess.run([cli, "--data-dir", str(data), "keys", "create", "--name",
                              "bench-ws", "--rpm", "100000000", "--tpm", "1000000000"],
                             check=True, env=env, cwd=REPO, capture_output=True, text=True)
    secret = created.stdout.strip().splitlines()[-1].strip()
    return (backend, web), base, backend_url, secret


def web_process(up_pid: int) -> psutil.Process:
    """The uvicorn child of ``openclaw up``."""
    for child in psutil.Process(up_pid).children(recursive=True):
        if "uvicorn" in " ".join(child.cmdline()):
            return child
    raise RuntimeError("no uvicorn process under openclaw up")


def connect(base: str, secret: str, conversation: str = "new"):
    return websockets.connect(
        base.replace("http://", "ws://") + f"/ws/chat/{conversation}/",
        additional_headers={"Authorization": f"Bearer {secret}"}, origin=base,
        open_timeout=60, max_queue=None)


ENGINE_BODY = {"model": "bench", "stream": True,
               "messages": [{"role": "user", "content": PROMPT}]}


async def engine_once(client: httpx.AsyncClient) -> float:
    """The backend's own time to first content chunk, same prompt, streamed."""
    started = time.perf_counter()
    first = None
    async with client.stream("POST", "/v1/chat/completions", json=ENGINE_BODY) as response:
        async for line in response.aiter_lines():  # read to the end, keep-alive
            if first is None and line.startswith("data:") and '"content"' in line:
                first = (time.perf_counter() - started) * 1000
    return first


async def ws_once(ws, n: int, nodes: dict) -> tuple[float, float]:
    """Client-side TTFT of one turn over the websocket, and the consumer's own
    ``ttft_ms``; ``nodes`` gathers each node's duration and when the graph's
    ``generate`` started."""
    started = time.perf_counter()
    await ws.send(json.dumps({"type": "message", "id": f"t{n}", "content": PROMPT,
                              "model": "bench"}))
    first = None
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "node" and frame.get("ms") is not None:
            nodes.setdefault(frame["node"], []).append(frame["ms"])
        elif frame["type"] == "node" and frame["node"] == "generate":
            nodes.setdefault("(generate starts at)", []).append(frame["at_ms"])
        elif frame["type"] == "token" and first is None:
            first = (time.perf_counter() - started) * 1000
        elif frame["type"] == "error":
            raise RuntimeError(f"turn failed: {frame}")
        elif frame["type"] == "done":
            return first, frame.get("ttft_ms") or 0.0


async def ttft_rounds(base: str, secret: str, backend_url: str, turns: int, rounds: int,
                      nodes: dict | None = None) -> tuple[list[float], list[float], list[float]]:
    """``turns`` samples of each, in ``rounds`` alternating blocks: the engine's own
    TTFT back to back, then as many turns over the websocket back to back, and again —
    each kind measured as it runs under load, both through the machine's drift. The
    engine's samples, the websocket's, and the consumer's ``ttft_ms``."""
    engine, client, server = [], [], []
    nodes = {} if nodes is None else nodes
    per_round = max(1, turns // rounds)
    async with httpx.AsyncClient(base_url=backend_url, timeout=30) as http, \
            connect(base, secret) as ws:
        for _round in range(rounds):
            engine += [await engine_once(http) for _ in range(per_round)]
            for _ in range(per_round):
                first, consumer = await ws_once(ws, len(client), nodes)
                client.append(first)
                server.append(consumer)
    return engine, client, server


async def answer(ws, request_id: str) -> dict:
    """Read one turn's frames to its end: the answer's text, token frames, when the
    first and last token frames came (perf_counter) and whether it ended ``done``
    with that very text. A token frame may carry several tokens (coalesced)."""
    parts: list[str] = []
    frames, first, last = 0, None, None
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "token" and frame.get("id") == request_id:
            now = time.perf_counter()
            first = first if first is not None else now
            last, frames = now, frames + 1
            parts.append(frame["text"])
        elif frame["type"] in ("done", "error") and frame.get("id") == request_id:
            text = "".join(parts)
            return {"ok": frame["type"] == "done" and frame.get("content") == text,
                    "tokens": len(text.split()), "frames": frames, "first": first,
                    "last": last}


async def one_session(base: str, secret: str, n: int) -> dict:
    started = time.perf_counter()
    try:
        async with connect(base, secret) as ws:
            await ws.send(json.dumps({"type": "message", "id": f"c{n}", "content": PROMPT,
                                      "model": "stream"}))
            async with asyncio.timeout(120):
                got = await answer(ws, f"c{n}")
            got["ok"] = got["ok"] and got["tokens"] == STREAM_TOKENS
    except (OSError, TimeoutError, websockets.WebSocketException):
        got = {"ok": False, "first": None}
    got["ms"] = (time.perf_counter() - started) * 1000
    got["first_ms"] = (got["first"] - started) * 1000 if got.get("first") else None
    return got


def cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    found = {}
    for name, process in processes.items():
        try:
            times = process.cpu_times()
            found[name] = times.user + times.system
        except psutil.Error:
            found[name] = 0.0
    return found


def cpu_shares(before: dict[str, float], after: dict[str, float], wall: float) -> dict:
    """Each process's CPU during a run, as a share of one core."""
    return {name: round((after[name] - before[name]) / wall, 2) for name in before}


def web_cpu_ms(before: dict[str, float], after: dict[str, float]) -> float:
    """The web process's CPU time during a run, in ms."""
    return (after["web"] - before["web"]) * 1000


async def concurrency(base: str, secret: str, level: int, web: psutil.Process,
                      watched: dict[str, psutil.Process]) -> dict:
    peak = web.memory_info().rss
    before, started = cpu_seconds(watched), time.perf_counter()
    sessions = asyncio.gather(*(one_session(base, secret, n) for n in range(level)))
    task = asyncio.ensure_future(sessions)
    while not task.done():
        peak = max(peak, web.memory_info().rss)
        await asyncio.sleep(0.2)
    results = task.result()
    wall, after = time.perf_counter() - started, cpu_seconds(watched)
    done = [r for r in results if r["ok"]]
    durations = [r["ms"] for r in done]
    firsts = [r["first_ms"] for r in done]
    tokens_per_s = level * STREAM_TOKENS / (max(durations) / 1000) if durations else 0
    return {"sessions": level, "completed": len(durations),
            "tokens_per_s": round(tokens_per_s),
            "held": len(durations) == level,
            "session_ms_p50": round(statistics.median(durations), 1) if durations else None,
            "session_ms_p99": round(percentile(durations, 0.99), 1) if durations else None,
            "session_ms_max": round(max(durations), 1) if durations else None,
            "first_token_ms_p50": round(statistics.median(firsts), 1) if firsts else None,
            "first_token_ms_p99": round(percentile(firsts, 0.99), 1) if firsts else None,
            "frames_per_session_p50": statistics.median(r["frames"] for r in done)
            if done else None,
            "ideal_session_ms": STREAM_TOKENS * 50, "web_rss_peak_mb": round(peak / 2**20, 1),
            "cpu_share": cpu_shares(before, after, wall),
            "web_cpu_ms_per_session": round(web_cpu_ms(before, after) / level, 2)}


async def engine_stream(client: httpx.AsyncClient, tokens: int) -> int:
    """One fast answer straight from the backend: its token count."""
    count = 0
    body = {**ENGINE_BODY, "model": fast_model(tokens)}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:") and '"content"' in line:
                count += 1
    return count


async def throughput(base: str, secret: str, backend_url: str, sockets: int, tokens: int,
                     watched: dict[str, psutil.Process]) -> dict:
    """Tokens relayed per second over ``sockets`` websockets at once, each streaming a
    ``tokens``-token answer the engine writes without pause; then the same streams read
    from the backend directly (what the engine alone delivers to one Python client)."""
    async with contextlib.AsyncExitStack() as stack:
        opened = [await stack.enter_async_context(connect(base, secret))
                  for _ in range(sockets)]
        for n, ws in enumerate(opened):  # a conversation each, warm
            await ws.send(json.dumps({"type": "message", "id": f"w{n}", "content": PROMPT,
                                      "model": "bench"}))
            await answer(ws, f"w{n}")
        before, started = cpu_seconds(watched), time.perf_counter()
        for n, ws in enumerate(opened):  # (the turn's default max_tokens would cut it)
            await ws.send(json.dumps({"type": "message", "id": f"f{n}", "content": PROMPT,
                                      "model": "fast", "params": {"max_tokens": tokens}}))
        async with asyncio.timeout(300):
            results = await asyncio.gather(*(answer(ws, f"f{n}")
                                             for n, ws in enumerate(opened)))
        wall, after = time.perf_counter() - started, cpu_seconds(watched)
        shares = cpu_shares(before, after, wall)
    delivered = sum(r["tokens"] for r in results)
    window = max(r["last"] for r in results) - min(r["first"] for r in results)
    async with httpx.AsyncClient(base_url=backend_url, timeout=120,
                                 limits=httpx.Limits(max_connections=sockets)) as http:
        engine_started = time.perf_counter()
        direct = await asyncio.gather(*(engine_stream(http, tokens) for _ in range(sockets)))
        engine_wall = time.perf_counter() - engine_started
    return {"sockets": sockets, "tokens_each": tokens,
            "complete": all(r["ok"] and r["tokens"] == tokens for r in results),
            "tokens_delivered": delivered, "wall_s": round(wall, 3),
            "tokens_per_s": round(delivered / wall),
            "tokens_per_s_streaming": round(delivered / window) if window > 0 else None,
            "frames_per_answer_p50": statistics.median(r["frames"] for r in results),
            "tokens_per_frame": round(delivered / max(1, sum(r["frames"] for r in results)),
                                      2),
            "cpu_share": shares,
            "web_cpu_us_per_token": round(web_cpu_ms(before, after) * 1000 / delivered, 1),
            "engine_direct_tokens_per_s": round(sum(direct) / engine_wall)}


async def idle_memory(base: str, secret: str, count: int, web: psutil.Process) -> dict:
    await asyncio.sleep(1)
    before = web.memory_info().rss
    sockets = []
    for _ in range(count):
        ws = await connect(base, secret)
        sockets.append(ws)
        await ws.send(json.dumps({"type": "ping"}))
        await ws.recv()
    await asyncio.sleep(1)
    after = web.memory_info().rss
    for ws in sockets:
        await ws.close()
    return {"connections": count, "rss_before_mb": round(before / 2**20, 1),
            "rss_after_mb": round(after / 2**20, 1),
            "kib_per_connection": round((after - before) / count / 1024, 1)}


async def run(args: argparse.Namespace, base: str, backend_url: str, secret: str,
              web: psutil.Process, watched: dict[str, psutil.Process]) -> dict:
    await ttft_rounds(base, secret, backend_url, 10, 1)  # warm-up: graph compiled, pools open
    idle = await idle_memory(base, secret, args.idle, web)  # before load grows the heap
    nodes: dict[str, list[float]] = {}
    engine, client, server = await ttft_rounds(base, secret, backend_url, args.turns,
                                               args.rounds, nodes)
    ttft = {"engine": latency_summary(engine), "websocket": latency_summary(client),
            "consumer_ttft_ms": latency_summary(server),
            "overhead_p50_ms": round(statistics.median(client) - statistics.median(engine), 2),
            "overhead_p99_ms": round(percentile(client, 0.99) - percentile(engine, 0.99), 2),
            "graph_nodes_p50_ms": {name: round(statistics.median(values), 2)
                                   for name, values in nodes.items()}}
    ttft["engine"]["p99_ms"] = round(percentile(engine, 0.99), 2)
    ttft["websocket"]["p99_ms"] = round(percentile(client, 0.99), 2)
    relay = await throughput(base, secret, backend_url, args.fast_sockets, args.fast_tokens,
                             watched)
    print(f"  throughput: {relay}")  # noqa: T201
    levels = []
    for level in args.levels:
        result = await concurrency(base, secret, level, web, watched)
        levels.append(result)
        print(f"  {level} sessions: {result}")  # noqa: T201
        if not result["held"]:
            break
    return {"ttft": ttft, "throughput": relay, "concurrency": levels, "idle": idle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4,
                        help="alternating blocks of engine and websocket samples")
    parser.add_argument("--levels", default="10,50,200",
                        type=lambda v: [int(x) for x in v.split(",")])
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument("--recall", action="store_true", help="long-term recall on")
    parser.add_argument("--fast-sockets", type=int, default=20,
                        help="sockets streaming at once in the throughput run")
    parser.add_argument("--fast-tokens", type=int, default=2000,
                        help="tokens of each answer in the throughput run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oc-bench-ws-") as folder:
        tmp = Path(folder)
        processes, base, backend_url, secret = start(tmp, args.recall, args.fast_tokens)
        try:
            web = web_process(processes[1].pid)
            watched = {"web": web, "backend": psutil.Process(processes[0].pid),
                       "bench_client": psutil.Process()}
            figures = asyncio.run(run(args, base, backend_url, secret, web, watched))
        finally:
            for process in reversed(processes):
                stop(process)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "recall": args.recall, "turns": args.turns, "rounds": args.rounds,
              "fast_sockets": args.fast_sockets, "fast_tokens": args.fast_tokens, **figures}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ws.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    ttft = figures["ttft"]
    print(json.dumps(result, indent=2))  # noqa: T201
    print(f"websocket TTFT overhead: p50 {ttft['overhead_p50_ms']} ms, "  # noqa: T201
          f"p99 {ttft['overhead_p99_ms']} ms; relay {figures['throughput']['tokens_per_s']} "
          f"tokens/s; wrote {RESULTS / 'ws.json'}")


if __name__ == "__main__":
    main()
