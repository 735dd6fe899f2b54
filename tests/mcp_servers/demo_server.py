"""A small MCP server built with the official ``mcp`` SDK (``MCPServer``), for tests and
benchmarks that need a real MCP server in a separate process.

Run it as::

    python -m tests.mcp_servers.demo_server --transport streamable-http --port 8931
    python -m tests.mcp_servers.demo_server --transport sse --port 8932 --require-token T
    python -m tests.mcp_servers.demo_server --transport stdio

Options (a stable interface: other tests and ``bench/`` start it):

``--transport streamable-http|sse|stdio``
    Streamable HTTP serves ``http://HOST:PORT/mcp``; SSE serves ``http://HOST:PORT/sse``
    (messages under ``/messages/``); stdio talks over stdin/stdout.
``--host H`` / ``--port N``
    Where the HTTP transports listen (default 127.0.0.1, port 8000).
``--require-token T``
    HTTP transports: a request without ``Authorization: Bearer T`` gets 401.
``--without NAME`` (repeatable)
    Leave the tool ``NAME`` out (a server whose tools changed since the last discovery).

Tools:

``add(a: int, b: int)``
    The sum (structured content ``{"result": a + b}``).
``weather(city: str)``
    A deterministic report: "<city>: <n> °C, sunny", ``n`` from the city's letters.
``slow(seconds: float)``
    Sleeps, then answers "slept <seconds> s" (a hanging tool, for timeouts).
``fail()``
    Always fails: the result has ``isError`` and the text "the demo tool failed on purpose".
``environment()``
    The names of the environment variables the process was started with (sorted): what a
    stdio server launched with a clean environment sees.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

FAILURE = "the demo tool failed on purpose"


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def weather(city: str) -> str:
    """Today's weather in a city (a made-up but repeatable report)."""
    degrees = sum(ord(letter) for letter in city.lower()) % 35
    return f"{city}: {degrees} °C, sunny"


async def slow(seconds: float) -> str:
    """Wait this many seconds, then answer."""
    await anyio.sleep(seconds)
    return f"slept {seconds:g} s"


def fail() -> str:
    """A tool that always fails."""
    raise ToolError(FAILURE)


def environment() -> list[str]:
    """The names of the environment variables this server was started with."""
    # /proc keeps the environment the process was started with; os.environ may hold
    # what Python's start-up added itself (e.g. LC_CTYPE under a C locale).
    started_with = Path("/proc/self/environ")
    if started_with.exists():
        entries = started_with.read_bytes().split(b"\0")
        return sorted({entry.split(b"=", 1)[0].decode() for entry in entries if entry})
    return sorted(os.environ)


TOOLS = {"add": add, "weather": weather, "slow": slow, "fail": fail,
         "environment": environment}


def build(without: Sequence[str] = ()) -> MCPServer:
    server = MCPServer("openclaw-demo", instructions="Demo tools for OpenClaw's tests.",
                       log_level="WARNING")
    for name, function in TOOLS.items():
        if name not in without:
            server.add_tool(function, name=name)
    return server


class RequireToken:
    """ASGI middleware: HTTP requests must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app, token: str):
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") \
                != self.expected:
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"missing or wrong token"})
            return
        await self.app(scope, receive, send)


def serve_http(server: MCPServer, transport: str, host: str, port: int,
               token: str | None) -> None:
    app = server.sse_app(host=host) if transport == "sse" \
        else server.streamable_http_app(host=host)
    asgi = RequireToken(app, token) if token else app
    uvicorn.run(asgi, host=host, port=port, log_level="warning", lifespan="on")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=["streamable-http", "sse", "stdio"],
                        default="streamable-http")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--require-token", default=None)
    parser.add_argument("--without", action="append", default=[], choices=sorted(TOOLS))
    options = parser.parse_args(argv)
    server = build(options.without)
    if options.transport == "stdio":
        server.run("stdio")
    else:
        serve_http(server, options.transport, options.host, options.port,
                   options.require_token)


if __name__ == "__main__":
    main(sys.argv[1:])
