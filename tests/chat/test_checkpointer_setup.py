"""The checkpoint tables are made once, however many first turns arrive at once: on a
database without them, three turns of one event loop and three of another (as another
process would) all get a checkpointer, within seconds, and nothing waits forever (the
set-up's CREATE INDEX CONCURRENTLY against a session queued on the set-up lock was a
deadlock PostgreSQL does not detect)."""

from __future__ import annotations

import asyncio
import threading

import psycopg
import pytest

from chat.graph import checkpointer

pytestmark = pytest.mark.django_db(transaction=True)
TABLES = ("checkpoint_writes", "checkpoint_blobs", "checkpoints", "checkpoint_migrations")


def tables_present() -> set[str]:
    with psycopg.connect(checkpointer.conninfo(), autocommit=True) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE tablename = ANY(%s)",
                            [list(TABLES)]).fetchall()
    return {row[0] for row in rows}


def test_first_turns_at_once_on_a_database_without_the_tables():
    with psycopg.connect(checkpointer.conninfo(), autocommit=True) as conn:
        for table in TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    checkpointer._set_up.clear()
    got: list[list[object]] = []
    failed: list[BaseException] = []

    async def three_turns() -> None:
        try:
            savers = await asyncio.wait_for(
                asyncio.gather(*(checkpointer.get_saver() for _ in range(3))), 60)
            got.append(list(savers))
        finally:
            await checkpointer.close_saver()

    def loop() -> None:
        try:
            asyncio.run(three_turns())
        except BaseException as exc:  # reported below, in the test's thread
            failed.append(exc)

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)

    assert failed == []
    assert len(got) == 2
    assert all(len({id(saver) for saver in savers}) == 1 for savers in got)  # one per loop
    assert tables_present() == set(TABLES)
