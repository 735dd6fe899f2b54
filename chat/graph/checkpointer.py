"""The PostgreSQL checkpointer of the conversation graph, encrypting what it stores.

LangGraph's ``AsyncPostgresSaver`` on a psycopg pool (autocommit, no prepared
statements, dict rows) to the project's database; its serializer wraps the default one
in AES-256-GCM with the project's keys (``settings.ENCRYPTION_KEYS``), the key id in
each stored type (``msgpack+aesgcm:<key id>``) so keys rotate like the rows' do.
A pool belongs to one event loop: there is one per loop, opened on first use.
"""

from __future__ import annotations

import asyncio
import os
import weakref

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.db import connections
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

CIPHER = "aesgcm"
NONCE_BYTES = 12
SETUP_LOCK = 7_414_243  # pg_advisory_lock key: one process creates the tables at a time


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


_savers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncPostgresSaver] = (
    weakref.WeakKeyDictionary())
_set_up: set[str] = set()  # databases whose checkpoint tables this process checked


def _pool_size() -> int:
    """As many connections as Django's own pool may open (at least 2: set-up holds
    a lock on one while it runs on another)."""
    pool = (connections["default"].settings_dict.get("OPTIONS") or {}).get("pool")
    return max(2, pool.get("max_size", 10) if isinstance(pool, dict) else 10)


async def get_saver() -> AsyncPostgresSaver:
    """This event loop's checkpointer (its pool opened, the tables created once)."""
    loop = asyncio.get_running_loop()
    saver = _savers.get(loop)
    if saver is not None:
        return saver
    pool = AsyncConnectionPool(conninfo(), min_size=1, max_size=_pool_size(), open=False,
                               kwargs={"autocommit": True, "prepare_threshold": 0,
                                       "row_factory": dict_row})
    await pool.open()
    saver = AsyncPostgresSaver(pool, serde=serializer())
    database = connections["default"].settings_dict["NAME"]
    if database not in _set_up:
        await _setup(pool, saver)
        _set_up.add(database)
    if (existing := _savers.get(loop)) is not None:  # another task of this loop won
        await pool.close()
        return existing
    _savers[loop] = saver
    return saver


async def _setup(pool: AsyncConnectionPool, saver: AsyncPostgresSaver) -> None:
    async with pool.connection() as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", [SETUP_LOCK])
        try:
            await saver.setup()
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", [SETUP_LOCK])


async def close_saver() -> None:
    """Close this event loop's pool (tests; a server's loop lives as long as it)."""
    saver = _savers.pop(asyncio.get_running_loop(), None)
    if saver is not None:
        await saver.conn.close()
