"""The PostgreSQL checkpointer of the conversation graph, encrypting what it stores.

LangGraph's ``AsyncPostgresSaver`` on a psycopg pool (autocommit, no prepared
statements, dict rows) to the project's database; its serializer wraps the default one
in AES-256-GCM with the project's keys (``settings.ENCRYPTION_KEYS``), the key id in
each stored type (``msgpack+aesgcm:<key id>``) so keys rotate like the rows' do.
A pool belongs to one event loop: there is one per loop, opened on first use.

A turn starts from its thread's latest checkpoint. ``CachingSaver`` keeps, per thread,
the latest checkpoint this process wrote or read (serialized, so no run can alter
it), and returns it instead of reading and decrypting it again when the caller knows
the thread's head (``expected_head``, the id the turn read when it began, under the
conversation's lease) and it is that one: a conversation served by one process loads
its checkpoint from the database only when another process moved it on.

The head is also announced in Redis (``head_key``), before the checkpoint is written:
Redis then names either the database's head or a checkpoint that never got written
(a failed write), never an older one, so a turn that finds there the id this process
keeps may skip asking the database (``kept``).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.db import connections
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from core import shared_state

CIPHER = "aesgcm"
NONCE_BYTES = 12
SETUP_LOCK = 7_414_243  # pg_advisory_lock key: one process creates the tables at a time

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]


class AesGcmCipher:
    """LangGraph's ``CipherProtocol`` over the project's AES-256-GCM keys."""

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        key_id = next(iter(settings.ENCRYPTION_KEYS))
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(settings.ENCRYPTION_KEYS[key_id]).encrypt(nonce, plaintext, None)
        return f"{CIPHER}:{key_id}", nonce + sealed

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        name, _, key_id = ciphername.partition(":")
        key = settings.ENCRYPTION_KEYS.get(key_id)
        if name != CIPHER or key is None:
            raise ValueError(f"checkpoint encrypted with {ciphername!r}: no such key configured")
        return AESGCM(key).decrypt(ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], None)


def serializer() -> EncryptedSerializer:
    return EncryptedSerializer(AesGcmCipher())


def conninfo() -> str:
    """libpq connection string of Django's default database (a socket dir as host)."""
    db = connections["default"].settings_dict
    options = {k: v for k, v in (db.get("OPTIONS") or {}).items() if k != "pool"}
    return make_conninfo("", dbname=db["NAME"], user=db.get("USER") or None,
                         password=db.get("PASSWORD") or None, host=db.get("HOST") or None,
                         port=db.get("PORT") or None, **options)


THREADS_KEPT = 1000  # threads whose latest checkpoint a saver keeps in memory
HEAD_TTL_S = 24 * 3600


def head_key(thread_id: str) -> str:
    """The cache key naming a thread's latest checkpoint (see the module's docstring)."""
    return f"chat:head:{thread_id}"


async def _announce(thread_id: str, checkpoint_id: str | None) -> None:
    """Name ``checkpoint_id`` as the thread's head (None: forget it), before the write."""
    if not shared_state.available():
        return
    key = shared_state.full_key(head_key(thread_id))
    await shared_state.execute([("SET", key, shared_state.dumps(checkpoint_id), "EX", HEAD_TTL_S)
                       if checkpoint_id else ("DEL", key)])
# The id of the thread's latest checkpoint as the run read it when it began ("": none).
expected_head: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "expected_head", default=None)


class CachingSaver(AsyncPostgresSaver):
    """``AsyncPostgresSaver`` with each thread's latest checkpoint kept in memory (see
    the module's docstring). Anything else that touches a thread — pending writes (an
    interrupt), deletion, pruning — drops what is kept of it."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._plain = JsonPlusSerializer()
        self._latest: OrderedDict[
            str, tuple[str, tuple, CheckpointMetadata, RunnableConfig | None]] = OrderedDict()
        self._written: dict[str, str] = {}  # thread → the checkpoint pending writes went to

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        latest = not get_checkpoint_id(config) and not configurable.get("checkpoint_ns")
        head = expected_head.get() if latest else None
        if head == "":
            return None  # the thread has no checkpoint yet
        kept = self._latest.get(thread_id) if head else None
        if kept is not None and kept[0] == head:
            self._latest.move_to_end(thread_id)
            _id, dumped, metadata, parent = kept
            return CheckpointTuple(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": "",
                                  "checkpoint_id": head}},
                self._plain.loads_typed(dumped), metadata, parent, [])
        found = await super().aget_tuple(config)
        if latest and found is not None and not found.pending_writes:
            self._keep(thread_id, found.checkpoint, found.metadata, found.parent_config)
        return found

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata, new_versions: ChannelVersions
                   ) -> RunnableConfig:
        self._latest.pop(str(config["configurable"]["thread_id"]), None)
        if not config["configurable"].get("checkpoint_ns"):
            await _announce(str(config["configurable"]["thread_id"]), checkpoint["id"])
        stored = await super().aput(config, checkpoint, metadata, new_versions)
        thread_id = str(stored["configurable"]["thread_id"])
        if not config["configurable"].get("checkpoint_ns") and \
                self._written.pop(thread_id, None) != checkpoint["id"]:
            parent: RunnableConfig | None = (
                {"configurable": {**stored["configurable"],
                                  "checkpoint_id": config["configurable"]["checkpoint_id"]}}
                if config["configurable"].get("checkpoint_id") else None)
            self._keep(thread_id, checkpoint, metadata, parent)
        return stored

    def _keep(self, thread_id: str, checkpoint: Checkpoint, metadata: CheckpointMetadata,
              parent: RunnableConfig | None) -> None:
        if any(isinstance(v, _DeltaSnapshot) for v in checkpoint["channel_values"].values()):
            return
        self._latest[thread_id] = (checkpoint["id"], self._plain.dumps_typed(checkpoint),
                                   metadata.copy(), parent)
        self._latest.move_to_end(thread_id)
        while len(self._latest) > THREADS_KEPT:
            self._latest.popitem(last=False)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        thread_id = str(config["configurable"]["thread_id"])
        self._latest.pop(thread_id, None)
        if not config["configurable"].get("checkpoint_ns"):
            self._written[thread_id] = config["configurable"].get("checkpoint_id", "")
        await super().aput_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self._latest.pop(str(thread_id), None)
        self._written.pop(str(thread_id), None)
        await _announce(str(thread_id), None)
        await super().adelete_thread(thread_id)

    async def aprune(self, thread_ids: Sequence[str], **kwargs: Any) -> None:
        for thread_id in thread_ids:
            self._latest.pop(str(thread_id), None)
            await _announce(str(thread_id), None)
        await super().aprune(thread_ids, **kwargs)

    def kept(self, thread_id: str) -> str | None:
        """The id of the thread's checkpoint this saver keeps in memory, if any."""
        found = self._latest.get(str(thread_id))
        return found[0] if found else None


_savers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CachingSaver] = (
    weakref.WeakKeyDictionary())
_making: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary())
_set_up: set[str] = set()  # databases whose checkpoint tables this process checked
SETUP_POLL_S = 0.05


def _pool_size() -> int:
    """As many connections as Django's own pool may open (at least 2: set-up holds
    a lock on one while it runs on another)."""
    pool = (connections["default"].settings_dict.get("OPTIONS") or {}).get("pool")
    return max(2, pool.get("max_size", 10) if isinstance(pool, dict) else 10)


async def get_saver() -> CachingSaver:
    """This event loop's checkpointer (its pool opened, the tables created once). The
    first turns of a loop wait for one of them to make it: several making their own at
    once would run the tables' set-up side by side."""
    loop = asyncio.get_running_loop()
    saver = _savers.get(loop)
    if saver is not None:
        return saver
    async with _making.setdefault(loop, asyncio.Lock()):
        saver = _savers.get(loop)
        if saver is None:
            saver = _savers[loop] = await _make_saver()
    return saver


async def _make_saver() -> CachingSaver:
    # Checked as it leaves the pool (an empty query), like Django's pool: a connection a
    # database restart broke is replaced, not handed to a turn.
    pool = AsyncConnectionPool(conninfo(), min_size=1, max_size=_pool_size(), open=False,
                               check=AsyncConnectionPool.check_connection,
                               kwargs={"autocommit": True, "prepare_threshold": 0,
                                       "row_factory": dict_row})
    await pool.open()
    saver = CachingSaver(pool, serde=serializer())
    database = connections["default"].settings_dict["NAME"]
    if database not in _set_up:
        try:
            await _setup(pool, saver)
        except BaseException:
            await pool.close()
            raise
        _set_up.add(database)
    return saver


def pool_of(saver: AsyncPostgresSaver) -> Pool:
    """The saver's connection pool (``get_saver`` gives every saver a pool of dict-row
    connections; LangGraph types ``conn`` as a connection or a pool)."""
    return cast(Pool, saver.conn)


async def database() -> Pool:
    """This event loop's psycopg pool to the project's database (the checkpointer's:
    autocommit, dict rows), for the few statements async code runs without a thread."""
    return pool_of(await get_saver())


async def _setup(pool: AsyncConnectionPool, saver: CachingSaver) -> None:
    """Create the tables, one process at a time. The lock is taken with
    ``pg_try_advisory_lock`` and a sleep, never by a query that waits: set-up runs
    ``CREATE INDEX CONCURRENTLY``, which waits for every open transaction — a session
    blocked in ``pg_advisory_lock`` is one, waiting in turn for the set-up: a deadlock
    PostgreSQL does not see."""
    async with pool.connection() as conn:
        while not await _try_lock(conn):
            await asyncio.sleep(SETUP_POLL_S)
        try:
            await saver.setup()
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", [SETUP_LOCK])


async def _try_lock(conn: Any) -> bool:
    row = await (await conn.execute("SELECT pg_try_advisory_lock(%s) AS got",
                                    [SETUP_LOCK])).fetchone()
    return bool(row and row["got"])


async def close_saver() -> None:
    """Close this event loop's pool (tests; a server's loop lives as long as it)."""
    saver = _savers.pop(asyncio.get_running_loop(), None)
    if saver is not None:
        await saver.conn.close()
