"""Gateway overhead: the loopback OpenAI backend called directly, through OpenClaw
(``openclaw up``: daphne, embedded PostgreSQL and Redis) and, when installed,
through a LiteLLM proxy on the same backend. Prints a side-by-side table and
writes bench/results/gateway.json.

    python bench/gateway.py [--seconds 5] [--streams 100]

The load comes from ``wrk`` (``apt-get install -y wrk``) with bench/gateway.lua,
at concurrency 1, 16 and 64 (threads = min(2, c)): requests/s and latency
p50/p99. OpenClaw's own overhead is read from the ``x-openclaw-overhead-ms``
header of every response (LiteLLM's from ``x-litellm-overhead-duration-ms``),
and the "added" latency is the target's p50/p99 minus the backend's at
concurrency 1. Time to first token: --streams sequential streams from a small
Python client, first content chunk. Through OpenClaw the same answer is also asked
for on its other surfaces at concurrency 1 — the Responses API (``/v1/responses``),
Anthropic's Messages (``/v1/messages``) and legacy completions — and their overhead
p50 is set beside chat completions' (one core serves them all, so they should match).

LiteLLM runs from its own environment, never this project's:

    python3 -m venv bench/.venv-litellm && bench/.venv-litellm/bin/pip install 'litellm[proxy]'

Everything shares the machine's cores (wrk, the backend, the gateway), so the
figures compare gateways on one machine, not absolute capacity.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from bench.stats import percentile  # noqa: E402

LUA = REPO / "bench" / "gateway.lua"
LITELLM = REPO / "bench" / ".venv-litellm" / "bin" / "litellm"
MODEL = "bench"
MESSAGES = [{"role": "user", "content": "hello big world"}]
CHAT_BODY = {"model": MODEL, "messages": MESSAGES, "max_tokens": 16}
STREAM_BODY = {"model": MODEL, "messages": [{"role": "user", "content": " ".join(["tok"] * 16)}],
               "stream": True}
CONCURRENCIES = (1, 16, 64)
# The same answer on each of OpenClaw's surfaces: (path, body, extra environment).
SURFACES = {
    "chat": ("chat/completions", CHAT_BODY, {}),
    "responses": ("responses", {"model": MODEL, "input": MESSAGES[0]["content"],
                                "max_output_tokens": 16, "store": False}, {}),
    "messages": ("messages", {"model": MODEL, "messages": MESSAGES, "max_tokens": 16},
                 {"BENCH_VERSION": "2023-06-01"}),
    "completions": ("completions", {"model": MODEL, "prompt": MESSAGES[0]["content"],
                                    "max_tokens": 16}, {}),
}


# --- processes -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, seconds: float, what: str,
              headers: dict | None = None) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status < 500:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (see its log)")
        time.sleep(0.2)


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def spawn(argv: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)


def openclaw_bin() -> str:
    found = Path(sys.executable).parent / "openclaw"
    return str(found) if found.exists() else (shutil.which("openclaw") or "openclaw")


def start_openclaw(tmp: Path, backend: str) -> tuple[subprocess.Popen, str, str]:
    data, port = tmp / "openclaw-data", free_port()
    env = dict(os.environ, OPENCLAW_DATA_DIR=str(data))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    cli = openclaw_bin()
    process = spawn([cli, "up", "--data-dir", str(data), "--port", str(port)],
                    tmp / "openclaw.log", env)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/readyz", process, 120, "openclaw up")
    config = tmp / "models.yaml"
    config.write_text(f"models:\n  - name: {MODEL}\n    type: remote\n    engine: openai\n"
                      f"    endpoint: {backend}\n", encoding="utf-8")
    subprocess.run([cli, "--data-dir", str(data), "config", "apply", str(config)],
                   check=True, env=env, cwd=REPO, capture_output=True, text=True)
    created = subprocess.run(
        [cli, "--data-dir", str(data), "keys", "create", "--name", "bench",
         "--rpm", "100000000", "--tpm", "1000000000"],
        check=True, env=env, cwd=REPO, capture_output=True, text=True)
    secret = created.stdout.strip().splitlines()[-1].strip()
    return process, f"{base}/v1", secret


def start_litellm(tmp: Path, backend: str) -> tuple[subprocess.Popen, str, str] | None:
    if not LITELLM.exists():
        return None
    port = free_port()
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {backend}\n"
        "      api_key: none\n"
        "litellm_settings:\n"
        "  telemetry: false\n", encoding="utf-8")
    master = f"sk-{os.urandom(24).hex()}"  # authenticated, like OpenClaw
    env = dict(os.environ, LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False",
               LITELLM_MASTER_KEY=master)
    env.pop("VIRTUAL_ENV", None)
    process = spawn([str(LITELLM), "--config", str(config), "--port", str(port),
                     "--host", "127.0.0.1", "--num_workers", "1"], tmp / "litellm.log", env)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/health/liveliness", process, 180, "litellm")
    return process, f"{base}/v1", master


# --- load -----------------------------------------------------------------------------


def wrk(url: str, secret: str, concurrency: int, seconds: float, header: str,
        tmp: Path, surface: str = "chat") -> dict:
    out = tmp / f"wrk-{os.getpid()}-{time.monotonic_ns()}.json"
    path, body, extra = SURFACES[surface]
    env = dict(os.environ, BENCH_BODY=json.dumps(body),
               BENCH_AUTH=f"Bearer {secret}" if secret else "", BENCH_HEADER=header,
               BENCH_OUT=str(out), **extra)
    argv = ["wrk", f"-t{min(2, concurrency)}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
            "--timeout", "10s", "--latency", "-s", str(LUA), f"{url}/{path}"]
    subprocess.run(argv, check=True, env=env, capture_output=True, text=True)
    raw = json.loads(out.read_text())
    values = raw["header_values"]
    errors = sum(raw[k] for k in ("errors_status", "errors_connect", "errors_read",
                                  "errors_timeout"))
    result = {
        "concurrency": concurrency,
        "requests": raw["requests"], "errors": errors,
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2), "p99_ms": round(raw["p99_us"] / 1000, 2),
    }
    if values:
        result["overhead_p50_ms"] = round(statistics.median(values), 2)
        result["overhead_p99_ms"] = round(percentile(values, 0.99), 2)
    return result


def warm_up(url: str, secret: str, seconds: float, tmp: Path) -> None:
    wrk(url, secret, 4, seconds, "", tmp)


def ttft(url: str, secret: str, count: int) -> dict:
    """Sequential streams: time to the first content chunk and to [DONE]."""
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    first, total = [], []
    with httpx.Client(headers=headers, timeout=30) as client:
        for index in range(count + 5):
            started = time.perf_counter()
            got_first = None
            with client.stream("POST", f"{url}/chat/completions", json=STREAM_BODY) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if got_first is None and line.startswith("data: {") and '"content":"' in (
                            line.replace(" ", "")) and '"content":""' not in line.replace(" ", ""):
                        got_first = time.perf_counter() - started
            done = time.perf_counter() - started
            if index >= 5 and got_first is not None:  # the first few warm the connection
                first.append(got_first * 1000)
                total.append(done * 1000)
    return {"streams": len(first), "ttft_p50_ms": round(statistics.median(first), 2),
            "ttft_p99_ms": round(percentile(first, 0.99), 2),
            "done_p50_ms": round(statistics.median(total), 2)}


def measure(name: str, url: str, secret: str, header: str, seconds: float, streams: int,
            tmp: Path) -> dict:
    print(f"-- {name}: warm-up", flush=True)
    warm_up(url, secret, 2, tmp)
    runs = []
    for concurrency in CONCURRENCIES:
        result = wrk(url, secret, concurrency, seconds, header, tmp)
        print(f"   c={concurrency}: {result}", flush=True)
        runs.append(result)
    stream = ttft(url, secret, streams)
    print(f"   streams: {stream}", flush=True)
    return {"url": url, "runs": runs, "stream": stream}


def surfaces(url: str, secret: str, seconds: float, tmp: Path) -> dict:
    """OpenClaw's overhead on each surface at concurrency 1, in turn, twice each
    (alternating, so a drift of the machine does not favour one)."""
    found: dict[str, list[dict]] = {name: [] for name in SURFACES}
    for _round in range(2):
        for name in SURFACES:
            found[name].append(wrk(url, secret, 1, seconds, "x-openclaw-overhead-ms", tmp,
                                   surface=name))
    summary = {}
    for name, runs in found.items():
        values = [run["overhead_p50_ms"] for run in runs if "overhead_p50_ms" in run]
        summary[name] = {
            "overhead_p50_ms": round(statistics.median(values), 2) if values else None,
            "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 2),
            "rps": round(statistics.median(r["rps"] for r in runs), 1),
            "errors": sum(r["errors"] for r in runs)}
        print(f"   {name}: {summary[name]}", flush=True)
    return summary


# --- report ---------------------------------------------------------------------------


def added(results: dict) -> None:
    """Latency added over the backend alone at concurrency 1, and first-token overhead."""
    direct = results["direct"]
    base = direct["runs"][0]
    for name, target in results.items():
        if name == "direct":
            continue
        run = target["runs"][0]
        target["added_c1_p50_ms"] = round(run["p50_ms"] - base["p50_ms"], 2)
        target["added_c1_p99_ms"] = round(run["p99_ms"] - base["p99_ms"], 2)
        target["ttft_overhead_p50_ms"] = round(
            target["stream"]["ttft_p50_ms"] - direct["stream"]["ttft_p50_ms"], 2)


def table(results: dict) -> str:
    names = list(results)
    rows = [("", *names)]
    for index, concurrency in enumerate(CONCURRENCIES):
        rows.append((f"req/s c={concurrency}",
                     *(f"{results[n]['runs'][index]['rps']:.0f}" for n in names)))
        rows.append((f"latency p50/p99 c={concurrency} (ms)",
                     *(f"{results[n]['runs'][index]['p50_ms']:.2f} / "
                       f"{results[n]['runs'][index]['p99_ms']:.2f}" for n in names)))
    for index, concurrency in enumerate(CONCURRENCIES):
        def header(name: str, i: int = index) -> str:
            run = results[name]["runs"][i]
            if "overhead_p50_ms" not in run:
                return "-"
            return f"{run['overhead_p50_ms']:.2f} / {run['overhead_p99_ms']:.2f}"
        rows.append((f"overhead header p50/p99 c={concurrency} (ms)", *map(header, names)))
    rows.append(("added latency p50/p99 c=1 (ms)",
                 *("-" if n == "direct" else
                   f"{results[n]['added_c1_p50_ms']:.2f} / {results[n]['added_c1_p99_ms']:.2f}"
                   for n in names)))
    rows.append(("first token p50/p99 (ms)",
                 *(f"{results[n]['stream']['ttft_p50_ms']:.2f} / "
                   f"{results[n]['stream']['ttft_p99_ms']:.2f}" for n in names)))
    rows.append(("first-token overhead p50 (ms)",
                 *("-" if n == "direct" else f"{results[n]['ttft_overhead_p50_ms']:.2f}"
                   for n in names)))
    rows.append(("errors (all runs)",
                 *(str(sum(r["errors"] for r in results[n]["runs"])) for n in names)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for number, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                               for i, cell in enumerate(row)))
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--no-litellm", action="store_true")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    processes: list[subprocess.Popen] = []
    results: dict = {}
    try:
        backend_port = free_port()
        backend = spawn([sys.executable, "-m", "tests.openai_server", "--port",
                         str(backend_port)], tmp / "backend.log")
        processes.append(backend)
        backend_url = f"http://127.0.0.1:{backend_port}/v1"
        wait_http(f"{backend_url}/models", backend, 20, "the loopback backend")
        print(f"starting openclaw up (logs in {tmp})", flush=True)
        openclaw, openclaw_url, secret = start_openclaw(tmp, backend_url)
        processes.append(openclaw)
        litellm = None
        if not args.no_litellm:
            print("starting litellm" if LITELLM.exists() else
                  f"litellm: {LITELLM} missing, skipped", flush=True)
            litellm = start_litellm(tmp, backend_url)
            if litellm:
                processes.append(litellm[0])
        results["direct"] = measure("direct", backend_url, "", "", args.seconds, args.streams,
                                    tmp)
        results["openclaw"] = measure("openclaw", openclaw_url, secret,
                                      "x-openclaw-overhead-ms", args.seconds, args.streams, tmp)
        print("-- openclaw surfaces at c=1", flush=True)
        surface_results = surfaces(openclaw_url, secret, args.seconds, tmp)
        if litellm:
            results["litellm"] = measure("litellm", litellm[1], litellm[2],
                                         "x-litellm-overhead-duration-ms", args.seconds,
                                         args.streams, tmp)
    finally:
        for process in reversed(processes):
            stop(process)
    added(results)
    print()
    print(table(results))
    print("\nOpenClaw's surfaces at c=1 (same answer): overhead header p50, latency p50, req/s")
    for name, found in surface_results.items():
        print(f"  {name:12} {found['overhead_p50_ms']} ms  {found['p50_ms']} ms  "
              f"{found['rps']:.0f}/s  errors {found['errors']}")
    results["openclaw_surfaces_c1"] = surface_results
    if "litellm" in results:
        results["openclaw_vs_litellm_rps_c16"] = round(
            results["openclaw"]["runs"][1]["rps"] / max(results["litellm"]["runs"][1]["rps"],
                                                        0.1), 2)
        print(f"\nOpenClaw / LiteLLM requests/s at c=16: "
              f"{results['openclaw_vs_litellm_rps_c16']}x")
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform()}
    out = REPO / "bench" / "results" / "gateway.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten {out.relative_to(REPO)}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
