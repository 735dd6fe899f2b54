"""MCP servers for tests and benchmarks: ``demo_server`` (the official SDK's server, run
as a process of its own) and ``DemoServer``, which starts it on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOKEN = "demo-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DemoServer:
    """The demo server in a process of its own on a free loopback port."""

    def __init__(self, transport: str, log: Path, *, token: str | None = TOKEN):
        """``transport``: ``streamable-http`` or ``sse``; ``log``: where its output goes;
        ``token``: the bearer token it requires (None: none)."""
        self.transport, self.log, self.token = transport, log, token
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        path = "/sse" if transport == "sse" else "/mcp"
        self.url = f"http://127.0.0.1:{self.port}{path}"

    def start(self, *without: str) -> DemoServer:
        argv = [sys.executable, "-m", "tests.mcp_servers.demo_server", "--transport",
                self.transport, "--port", str(self.port)]
        argv += ["--require-token", self.token] if self.token else []
        for name in without:
            argv += ["--without", name]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(argv, cwd=REPO, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the demo MCP server did not start:\n"
                                       + self.log.read_text()) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
