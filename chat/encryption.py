"""Re-encrypting the conversation graph's checkpoints with the current key: they are
sealed by the checkpointer's own cipher (``chat.graph.checkpointer``), not stored in an
``EncryptedTextField``, so ``core.rotation`` is told of them (``ChatConfig.ready()``)."""

from __future__ import annotations

from django.db import connection

from core.rotation import RotationReport

from .graph.checkpointer import CIPHER, AesGcmCipher

CHECKPOINT_TABLES = {
    "checkpoint_blobs": ["thread_id", "checkpoint_ns", "channel", "version"],
    "checkpoint_writes": ["thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx"],
}


def rotate_checkpoints(active: str, report: RotationReport) -> None:
    """Every checkpoint table present, re-sealed with the ``active`` key."""
    tables = set(connection.introspection.table_names())
    for table, key_columns in CHECKPOINT_TABLES.items():
        if table in tables:
            _rotate_table(table, key_columns, active, report)


def _rotate_table(table: str, key_columns: list[str], active: str,
                        report: RotationReport) -> None:
    cipher, marker = AesGcmCipher(), f"+{CIPHER}:"
    where = " AND ".join(f"{c} = %s" for c in key_columns)
    rotated = failed = 0
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(key_columns)}, type, blob FROM {table} "
                       "WHERE position(%s in type) > 0 AND split_part(type, %s, 2) <> %s",
                       [marker, marker, active])
        for *keys, kind, blob in cursor.fetchall():
            serialised, _sep, ciphername = kind.partition("+")
            try:
                plain = cipher.decrypt(ciphername, bytes(blob))
            except Exception:  # unknown key, or a tampered value: InvalidTag
                failed += 1
                continue
            name, sealed = cipher.encrypt(plain)
            cursor.execute(f"UPDATE {table} SET type = %s, blob = %s WHERE {where} "
                           "AND type = %s", [f"{serialised}+{name}", sealed, *keys, kind])
            rotated += cursor.rowcount
    report.rotated[table] = rotated
    if failed:
        report.failed[table] = failed
