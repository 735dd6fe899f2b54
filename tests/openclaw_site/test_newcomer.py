"""A newcomer's first ten minutes, as README tells them: `openclaw up` on a fresh
machine (a fresh HOME, so the default data folder), the printed studio URL in
Chromium, sign in with the printed password, chat, switch to 中文 and find no English
left, regenerate, side by side, open a job; `openclaw doctor` passes; README's curl
and Python examples run as written and answer."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.openclaw_site.test_up import (
    clean_env,
    free_port,
    processes_of,
    still_running,
    wait_ready,
)
from tests.studio.conftest import CHROMIUM, CHROMIUM_ARGS, sign_in

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# What may stay in Latin letters on a Chinese page: proper names, model names, units and
# protocol names (and what the user typed and echo repeated, which is excluded below).
PROPER = {"OpenClaw", "OC", "EN", "API", "JSON", "echo", "Echo", "emergency", "admin", "ms",
          "s", "MiniLM", "IBAN", "IP", "OpenAI", "SDK", "LangGraph", "Markdown", "ID", "GPU",
          "CPU", "KB", "MB"}
LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z_-]+")


class Up:
    """`openclaw up` in the background, its output collected line by line."""

    def __init__(self, home: Path, port: int):
        self.home, self.port, self.lines = home, port, []
        self.env = clean_env(HOME=str(home), OPENCLAW_PORT=str(port),
                             PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
                             OPENCLAW_MEMORY_TOP_K="0")
        for name in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "LANG", "LANGUAGE"):
            self.env.pop(name, None)
        self.process = subprocess.Popen([str(BIN / "openclaw"), "up"], env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def output_after(self, text: str, seconds: float = 60) -> str:
        """The output once it holds ``text`` (``up`` announces itself after its own
        readiness check, which may end after ours)."""
        deadline = time.monotonic() + seconds
        while text not in self.output() and time.monotonic() < deadline \
                and self.process.poll() is None:
            time.sleep(0.1)
        return self.output()

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "openclaw"), *argv], env=self.env,
                              capture_output=True, text=True, timeout=timeout, cwd=self.home)


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    home = Path(tempfile.mkdtemp(prefix="ocnew-"))
    instance = Up(home, free_port())
    try:
        wait_ready(f"http://127.0.0.1:{instance.port}", instance.process)
        yield instance
    finally:
        sys.stdout.write(instance.output()[-6000:])  # shown when the test failed
        if instance.process.poll() is None:
            instance.process.send_signal(signal.SIGINT)
            try:
                instance.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                instance.process.kill()
        shutil.rmtree(home, ignore_errors=True)


def readme_block(language: str, containing: str) -> str:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(rf"```{language}\n(.*?)```", text, re.S)
    found = [b for b in blocks if containing in b]
    assert len(found) == 1, f"README has {len(found)} {language} blocks with {containing!r}"
    return found[0]


IDENTIFIER = re.compile(r"\b(?:batch|ft|file|conv)_[0-9a-f]+\b")


def latin_words(text: str) -> set[str]:
    return {w for w in LATIN_WORD.findall(IDENTIFIER.sub(" ", text)) if w not in PROPER}


def english_on(page) -> set[str]:
    """Latin words in what a reader sees or hears: text, titles, placeholders, labels
    (not the conversation itself: what the user typed and the echo of it)."""
    texts = page.evaluate("""() => {
      const out = [];
      const skip = el => el.closest(
        '.msg .body, #conversations a.open, pre, code, script, style, [hidden]');
      const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
      while (walker.nextNode()) {
        const node = walker.currentNode, parent = node.parentElement;
        if (!parent || skip(parent)) continue;
        const style = getComputedStyle(parent);
        if (style.display === 'none' || style.visibility === 'hidden') continue;
        out.push(node.textContent);
      }
      document.querySelectorAll('[title], [placeholder], [aria-label]').forEach(el => {
        if (skip(el)) return;
        for (const name of ['title', 'placeholder', 'aria-label']) {
          if (el.getAttribute(name)) out.push(el.getAttribute(name));
        }
      });
      document.querySelectorAll('option').forEach(o => out.push(o.textContent));
      out.push(document.title);
      return out;
    }""")
    return latin_words(" ".join(texts))


def send(page, text: str) -> None:
    """Type and send ``text`` once the studio is idle (the send button is back)."""
    from playwright.sync_api import expect

    expect(page.locator("#send")).to_be_visible(timeout=20_000)
    page.fill("#prompt", text)
    page.keyboard.press("Enter")
    expect(page.locator("#prompt")).to_have_value("", timeout=5_000)


def test_the_newcomers_first_ten_minutes(up: Up):
    from playwright.sync_api import expect, sync_playwright

    output = up.output_after("/readyz\n")  # the announcement's last URL
    studio = re.search(r"(http://127\.0\.0\.1:\d+/studio/)", output)
    password = re.search(r"password: (\S+)", output)
    assert studio and password, output
    first_url = re.search(r"https?://\S+", output[output.index("ready in"):])
    assert first_url and first_url.group(0) == studio.group(1), "the studio URL comes first"

    # README's examples, as written (only the port is this test's)
    port = f"127.0.0.1:{up.port}"
    curl = up.run("doctor")
    assert curl.returncode == 0, curl.stdout + curl.stderr
    shell = readme_block("bash", "curl -N").replace("127.0.0.1:8000", port)
    ran = subprocess.run(["bash", "-euo", "pipefail", "-c", shell + '\necho "KEY=$OPENCLAW_KEY"'],
                         env=up.env, capture_output=True, text=True, timeout=120, cwd=up.home)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "chat.completion.chunk" in ran.stdout and "[DONE]" in ran.stdout, ran.stdout
    key = ran.stdout.rsplit("KEY=", 1)[1].strip()
    python = readme_block("python", 'model="emergency"').replace("127.0.0.1:8000", port)
    scope: dict = {"OPENCLAW_KEY": key}
    exec(compile(python, "README.md", "exec"), scope)  # noqa: S102 - README's own example
    assert scope["reply"].choices[0].message.content
    assert scope["later"].output_text
    # README's MCP client example: the default workflow run as a tool over /mcp
    client = readme_block("python", "streamable_http_client").replace(
        "127.0.0.1:8000", port).replace("sk-…", key)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(client, "README.md", "exec"), {})  # noqa: S102 - README's own example
    assert "workflow_conversation" in printed.getvalue(), printed.getvalue()
    assert "'status': 'done'" in printed.getvalue(), printed.getvalue()

    # a batch job to open later (README's example line and command)
    batch = readme_block("bash", "openclaw batch submit")
    ran = subprocess.run(["bash", "-euo", "pipefail", "-c", batch], env=up.env,
                         capture_output=True, text=True, timeout=180, cwd=up.home)
    assert ran.returncode == 0, ran.stdout + ran.stderr

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        sign_in(page, studio.group(1), "admin", password.group(1))

        picker = page.locator("#model")
        assert picker.input_value() == "echo"
        assert not [o for o in picker.locator("option").all_text_contents() if "MiniLM" in o]

        send(page, "hello newcomer")
        expect(page.locator(".msg.assistant").last).to_contain_text("newcomer", timeout=20_000)
        expect(page.locator(".msg.streaming")).to_have_count(0, timeout=20_000)

        page.click("#lang-zh")
        page.wait_for_load_state("networkidle")
        expect(page.locator(".msg.assistant").last).to_contain_text("newcomer", timeout=20_000)
        assert english_on(page) == set()
        # the run panel: graph, timeline, the route explanation (server-made lines)
        page.click("#toggle-panel")
        send(page, "explain the route")
        expect(page.locator("#route")).to_contain_text("紧急模型", timeout=20_000)
        expect(page.locator(".msg.streaming")).to_have_count(0, timeout=20_000)
        assert english_on(page) == set()

        expect(page.locator("#send")).to_be_visible(timeout=20_000)
        page.locator(".regenerate").last.click()
        expect(page.locator(".msg.assistant:not(.superseded)").last).to_contain_text(
            "newcomer", timeout=20_000)
        expect(page.locator(".msg.streaming")).to_have_count(0, timeout=20_000)
        assert english_on(page) == set()

        page.click("#compare")
        expect(page.locator("#pane-b")).to_be_visible()
        send(page, "side by side")
        for pane in ("#pane-a", "#pane-b"):
            expect(page.locator(f"{pane} .msg.assistant").last).to_contain_text(
                "side by side", timeout=20_000)
        expect(page.locator(".msg.streaming")).to_have_count(0, timeout=20_000)
        assert english_on(page) == set()
        page.screenshot(path=str(up.home / "newcomer-zh.png"))

        page.click("#jobs-link")
        page.wait_for_load_state("networkidle")
        job = page.locator("tr[data-id^='batch_']").first  # the README's batch, done
        expect(job).to_contain_text("已完成", timeout=20_000)
        expect(job).to_contain_text("2/2")
        assert english_on(page) == set()
        browser.close()

    children = processes_of(up.home, psutil.Process(up.process.pid))
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=60) == 0
    deadline = time.monotonic() + 10
    while still_running(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert still_running(children) == []
    assert "Traceback" not in up.output()
