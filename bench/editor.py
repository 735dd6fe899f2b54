"""The workflow editor's first open: how long a 50-node workflow takes to be on the canvas
and usable. Prints the figures; writes bench/results/editor.json.

    python bench/editor.py [--runs 10] [--nodes 50] [--url http://127.0.0.1:8000
                           --data-dir DIR]

It starts ``openclaw up`` (uvicorn, a Celery worker, embedded PostgreSQL and Redis) in a
temporary data folder — or, with ``--url`` and ``--data-dir``, uses one already running
— makes a user allowed to edit workflows (``openclaw shell``) and, through the editor's
JSON API, a workflow of ``--nodes`` nodes: a chain of model steps with a condition router
every tenth node (its ``then`` goes on down the chain, its ``else`` to a side step that
rejoins it), published with no saved layout, so the editor lays it out itself.

Each run opens /studio/workflows/<slug>/ in a new headless Chromium context (Debian's
``/usr/bin/chromium`` through Playwright; signed in, an empty HTTP cache: a first open)
and measures from the navigation's start (``performance.timeOrigin``, the page's own
clock):

* **nodes shown**: every node of the workflow is in the canvas (``.react-flow__node``);
* **interactive**: then a real mouse click (Playwright) on a node, until that node is
  selected (``.react-flow__node.selected``) — the page answers input.

Both are taken in the page by a ``requestAnimationFrame`` probe installed before any of
the page's scripts, so the figures are the frames the user sees. The first run warms
the server (templates, the API's first queries) and is reported apart. The target:
interactive within 1 s at p50.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from bench.gateway import free_port, openclaw_bin, spawn, stop, wait_http  # noqa: E402
from bench.stats import latency_summary  # noqa: E402

RESULTS = REPO / "bench" / "results"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
USER, PASSWORD = "bench-editor", "bench-editor-pass-1"
SLUG = "bench-fifty"
TARGET_MS = 1000

MAKE_USER = f"""
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
user, _ = get_user_model().objects.get_or_create(username={USER!r})
user.set_password({PASSWORD!r})
user.is_staff = True  # the editor is for staff (chat.editor_api.may)
user.save()
user.user_permissions.add(*Permission.objects.filter(
    content_type__app_label="chat",
    codename__in=["view_workflow", "change_workflow", "add_workflow"]))
"""

# Installed before the page's own scripts: notes (performance.now(), i.e. ms since the
# navigation started) the first frame with `count` nodes on the canvas, all visible
# (React Flow hides a node until it has measured it), the first pointerdown (the click
# arriving) and the first frame with a selected node.
PROBE = """(count) => {
  const mark = window.__editorBench = {nodes: null, pointerdown: null, selected: null};
  addEventListener("pointerdown", () => {
    if (mark.pointerdown === null) mark.pointerdown = performance.now();
  }, true);
  const shown = () => {
    const nodes = document.querySelectorAll(".react-flow__node");
    return nodes.length >= count
      && [...nodes].every((node) => getComputedStyle(node).visibility === "visible");
  };
  const tick = () => {
    if (mark.nodes === null && shown()) mark.nodes = performance.now();
    if (mark.selected === null && document.querySelector(".react-flow__node.selected"))
      mark.selected = performance.now();
    if (mark.selected === null) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""

# The page's calls to the editor's API: when each ended (ms since the navigation started).
API_CALLS = """() => performance.getEntriesByType("resource")
  .filter((entry) => entry.name.includes("/studio/api/") || entry.name.includes("/jsi18n/")
                     || entry.name.includes("/dist/editor."))
  .map((entry) => [new URL(entry.name).pathname, entry.startTime, entry.responseEnd])"""


def node(node_id: str, kind: str, **config) -> dict:
    return {"id": node_id, "type": kind, "config": config}


def definition(count: int) -> dict:
    """``count`` nodes: a chain of model steps; every tenth place a condition whose
    ``then`` continues the chain and whose ``else`` goes to a side step that rejoins it
    (a router's next nodes are its config: it has no edges); an ``end`` last."""
    nodes: list[dict] = []
    edges: list[dict] = []
    previous: str | None = None

    def add(new: dict) -> str:
        nodes.append(new)
        if previous is not None:
            edges.append({"source": previous, "target": new["id"]})
        return new["id"]

    while len(nodes) < count - 1:
        number = len(nodes)
        if number % 10 == 9 and len(nodes) + 3 <= count - 1:
            check, side, join = f"n{number}", f"n{number + 1}", f"n{number + 2}"
            add(node(check, "condition", then=join, when={
                "field": "content", "op": "icontains", "value": f"topic {number}"},
                **{"else": side}))
            nodes.append(node(side, "llm", prompt=f"Side step of {check}."))
            nodes.append(node(join, "llm", prompt=f"Step {join}."))
            edges.append({"source": side, "target": join})
            previous = join
        else:
            previous = add(node(f"n{number}", "llm", prompt=f"Step {number}: answer briefly."))
    add(node("done", "end"))
    return {"entry": nodes[0]["id"], "nodes": nodes, "edges": edges}


def start(tmp: Path) -> tuple[subprocess.Popen, str, Path]:
    data, port = tmp / "openclaw-data", free_port()
    env = dict(os.environ, OPENCLAW_DATA_DIR=str(data), OPENCLAW_MEMORY_TOP_K="0")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    up = spawn([openclaw_bin(), "up", "--data-dir", str(data), "--port", str(port)],
               tmp / "openclaw.log", env)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/readyz", up, 180, "openclaw up")
    return up, base, data


def make_user(data: Path) -> None:
    env = dict(os.environ, OPENCLAW_DATA_DIR=str(data))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    subprocess.run([openclaw_bin(), "--data-dir", str(data), "shell", "-c", MAKE_USER],
                   check=True, env=env, cwd=REPO, capture_output=True, text=True)


def make_workflow(base: str, count: int) -> dict:
    """Sign in through the studio's form and make (or remake) the workflow through the
    editor's API: created, then its definition saved and published as a new version."""
    with httpx.Client(base_url=base, timeout=30, follow_redirects=True) as client:
        client.get("/studio/login/")
        signed = client.post("/studio/login/", data={
            "username": USER, "password": PASSWORD,
            "csrfmiddlewaretoken": client.cookies["csrftoken"]},
            headers={"Referer": f"{base}/studio/login/"})
        signed.raise_for_status()
        headers = {"X-CSRFToken": client.cookies["csrftoken"], "Referer": f"{base}/studio/"}
        made = client.post("/studio/api/workflows/", headers=headers,
                           json={"slug": SLUG, "name": f"Bench: {count} nodes"})
        if made.status_code not in (201, 400):  # 400: kept from an earlier run (--url)
            made.raise_for_status()
        body = definition(count)
        saved = client.post(f"/studio/api/workflows/{SLUG}/versions/", headers=headers,
                            json={"definition": body, "layout": {}, "publish": True,
                                  "note": "bench"})
        if saved.status_code != 201:
            raise RuntimeError(f"the workflow was refused: {saved.text}")
        return saved.json()["version"]


def one_open(browser, base: str, state: Any, count: int) -> dict:
    context = browser.new_context(storage_state=state, viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.add_init_script(f"({PROBE})({count})")
        page.goto(f"{base}/studio/workflows/{SLUG}/", wait_until="commit")
        page.wait_for_function(
            "() => window.__editorBench && window.__editorBench.nodes !== null", timeout=30000)
        target = page.locator(".react-flow__node").nth(count // 2)
        target.click()
        page.wait_for_function("() => window.__editorBench.selected !== null", timeout=10000)
        marks = page.evaluate("() => window.__editorBench")
        timing = page.evaluate("() => { const n = performance.getEntriesByType('navigation')[0];"
                               " return {ttfb: n.responseStart, dcl: n.domContentLoadedEventEnd};"
                               " }")
        calls = page.evaluate(API_CALLS)
        if errors:
            raise RuntimeError(f"the page failed: {errors}")
        return {"nodes_ms": marks["nodes"], "interactive_ms": marks["selected"],
                "click_arrived_ms": marks["pointerdown"],
                "click_to_selected_ms": marks["selected"] - marks["pointerdown"],
                "ttfb_ms": timing["ttfb"], "dom_content_loaded_ms": timing["dcl"],
                "last_api_response_ms": max(end for path, _start, end in calls
                                            if "/studio/api/" in path),
                "calls": {path: [round(start, 1), round(end, 1)]
                          for path, start, end in calls}}
    finally:
        context.close()


FIGURES = ("ttfb_ms", "dom_content_loaded_ms", "last_api_response_ms", "nodes_ms",
           "click_arrived_ms", "interactive_ms", "click_to_selected_ms")


def rounded(sample: dict) -> dict:
    return {key: round(value, 2) if isinstance(value, float) else value
            for key, value in sample.items()}


def measure(base: str, runs: int, count: int) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{base}/studio/login/")
            page.fill("#id_username", USER)
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_load_state()
            state = context.storage_state()
            context.close()
            first = one_open(browser, base, state, count)
            samples = [one_open(browser, base, state, count) for _ in range(runs)]
            version = browser.version
        finally:
            browser.close()
    summary = {key: {**latency_summary([s[key] for s in samples]),
                     "max_ms": round(max(s[key] for s in samples), 2)}
               for key in FIGURES}
    return {"nodes": count, "runs": runs, "chromium": version,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "first_open": rounded(first),
            "samples": [rounded(sample) for sample in samples],
            **summary, "target_interactive_p50_ms": TARGET_MS,
            "meets_target": summary["interactive_ms"]["p50_ms"] <= TARGET_MS}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--url", help="a running `openclaw up` (with --data-dir)")
    parser.add_argument("--data-dir", help="that `openclaw up`'s data folder")
    args = parser.parse_args()
    if bool(args.url) != bool(args.data_dir):
        parser.error("--url and --data-dir go together")
    tmp = Path(tempfile.mkdtemp(prefix="oceditor-"))
    up = None
    try:
        if args.url:
            base, data = args.url.rstrip("/"), Path(args.data_dir)
        else:
            up, base, data = start(tmp)
        make_user(data)
        version = make_workflow(base, args.nodes)
        started = time.monotonic()
        results = measure(base, args.runs, args.nodes)
        results["version"] = version["number"]
        results["wall_s"] = round(time.monotonic() - started, 1)
    finally:
        stop(up)
    print(f"{args.nodes} nodes, {args.runs} first opens (ms since the navigation started):")
    for key in FIGURES:
        figure = results[key]
        print(f"  {key:24} p50 {figure['p50_ms']:7.1f}  p95 {figure['p95_ms']:7.1f}  "
              f"max {figure['max_ms']:7.1f}")
    print(f"  (the server's first open: interactive at "
          f"{results['first_open']['interactive_ms']:.0f} ms)")
    print(f"interactive: p50 {results['interactive_ms']['p50_ms']:.0f} ms, "
          f"max {results['interactive_ms']['max_ms']:.0f} ms "
          f"(nodes shown p50 {results['nodes_ms']['p50_ms']:.0f} ms; target ≤ {TARGET_MS} ms)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "editor.json").write_text(json.dumps(results, indent=2))
    print(f"written {RESULTS / 'editor.json'}")


if __name__ == "__main__":
    main()
