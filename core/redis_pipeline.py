"""A small asyncio Redis client for the ``/v1`` hot path: pipelines in, replies out.

redis-py's asyncio client spent about 0.35 ms of CPU per pipelined round trip here
(command packing, a timeout context per read, retry wrappers, pool bookkeeping) — a
third of a gateway request's CPU (``bench/gateway.py``: OpenClaw's overhead header,
p50 0.30 ms at c=1 with this client; README "Benchmarks"). The hot path needs none of
that generality: it sends a handful of commands at once and reads their replies. This
client writes the RESP encoding of a whole pipeline in one ``write`` and parses the
replies with ``hiredis`` (redis-py's own C parser).

Connections are pooled per event loop (``MAX_CONNECTIONS``; past that a request waits
up to ``POOL_WAIT_S`` for one). A connection that fails or times out mid-pipeline is
closed, never reused, and the error raised (``RedisUnavailable``); the idle ones go with
it (a restarted server has dropped them all), so the next pipeline connects afresh. A
server still loading its data after a restart (``LOADING``) is unavailable too. URLs: ``redis://``,
``rediss://`` (TLS) and ``unix://`` with ``?db=N``, user and password as redis-py
reads them.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

MAX_CONNECTIONS = 32  # per process and event loop
POOL_WAIT_S = 5.0  # longest wait for a free connection
CONNECT_TIMEOUT_S = 2.0  # longest wait for a new connection (an unreachable host)
REPLY_TIMEOUT_S = 5.0  # longest wait for a pipeline's replies


class RedisUnavailable(ConnectionError):
    """Redis could not be reached, or stopped answering mid-pipeline."""


class RedisReplyError(Exception):
    """Redis answered a command with an error (``-ERR …``)."""


# Error replies that say the server cannot serve yet, not that the command was wrong.
UNAVAILABLE_REPLIES = ("LOADING", "MASTERDOWN")


def pack(command: Sequence[Any]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.parser = hiredis.Reader()

    async def execute(self, payload: bytes, count: int) -> list[Any]:
        self.writer.write(payload)
        replies: list[Any] = []
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            while len(replies) < count:
                reply = self.parser.gets()
                if reply is False:
                    data = await self.reader.read(65536)
                    if not data:
                        raise RedisUnavailable("Redis closed the connection")
                    self.parser.feed(data)
                    continue
                replies.append(reply)
        return replies

    def close(self) -> None:
        self.writer.close()


class Pool:
    """Connections to one Redis for one event loop."""

    def __init__(self, url: str):
        self.url = url
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def _connect(self) -> _Connection:
        parts = urlsplit(self.url)
        query = parse_qs(parts.query)
        db = int((query.get("db") or [parts.path.strip("/")])[0] or 0) \
            if parts.scheme != "unix" else int((query.get("db") or ["0"])[0])
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                if parts.scheme == "unix":
                    reader, writer = await asyncio.open_unix_connection(unquote(parts.path))
                elif parts.scheme in ("redis", "rediss"):
                    context = ssl.create_default_context() if parts.scheme == "rediss" else None
                    reader, writer = await asyncio.open_connection(
                        parts.hostname or "localhost", parts.port or 6379, ssl=context)
                else:
                    raise RedisUnavailable(f"unsupported Redis URL scheme {parts.scheme!r}")
        except (OSError, TimeoutError) as exc:
            raise RedisUnavailable(f"cannot connect to Redis: {exc!r}") from exc
        connection = _Connection(reader, writer)
        setup: list[tuple[str | int, ...]] = []
        if parts.password:
            setup.append(("AUTH", *([unquote(parts.username)] if parts.username else []),
                          unquote(parts.password)))
        if db:
            setup.append(("SELECT", db))
        if setup:
            for reply in await connection.execute(b"".join(map(pack, setup)), len(setup)):
                if isinstance(reply, hiredis.ReplyError):
                    connection.close()
                    raise RedisUnavailable(f"Redis refused the connection set-up: {reply}")
        return connection

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The replies to ``commands``, sent as one pipeline; an error reply is raised."""
        payload = b"".join(map(pack, commands))
        try:
            async with asyncio.timeout(POOL_WAIT_S):
                await self.slots.acquire()
        except TimeoutError:
            raise RedisUnavailable("no free Redis connection within "
                                   f"{POOL_WAIT_S:g} s") from None
        connection = None
        try:
            connection = self._idle() or await self._connect()
            replies = await connection.execute(payload, len(commands))
        except (OSError, TimeoutError, RedisUnavailable, asyncio.CancelledError) as exc:
            if connection is not None:
                connection.close()  # replies may be pending on it: never reuse
            self.slots.release()
            if isinstance(exc, asyncio.CancelledError):
                raise
            self.drop_idle()
            raise RedisUnavailable(f"Redis did not answer: {exc!r}") from exc
        self.idle.append(connection)
        self.slots.release()
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                if str(reply).startswith(UNAVAILABLE_REPLIES):
                    raise RedisUnavailable(f"Redis cannot serve yet: {reply}")
                raise RedisReplyError(str(reply))
        return replies

    def _idle(self) -> _Connection | None:
        """An idle connection the server has not closed (a restart closes them all)."""
        while self.idle:
            connection = self.idle.pop()
            if not connection.reader.at_eof():
                return connection
            connection.close()
        return None

    def drop_idle(self) -> None:
        """Close the idle connections (their server failed one of them)."""
        idle, self.idle = self.idle, []
        for connection in idle:
            connection.close()


_pools: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> {url: Pool}


def pool_for(url: str) -> Pool:
    """The connections of the running event loop to the Redis at ``url``."""
    loop = asyncio.get_running_loop()
    by_url = _pools.get(loop)
    if by_url is None:
        by_url = _pools[loop] = {}
    found = by_url.get(url)
    if found is None:
        found = by_url[url] = Pool(url)
    return found
