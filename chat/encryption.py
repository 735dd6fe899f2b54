"""Re-encrypting data at rest with the current key (``openclaw keys rotate-data``):
every ``EncryptedTextField`` of every model, and the conversation graph's checkpoints.

A value names the key that sealed it, so only values sealed with another key are
touched; each is rewritten only if it did not change meanwhile (compare-and-set).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.apps import apps
from django.db import connection

from openclaw_site import crypto
from openclaw_site.fields import EncryptedTextField

from .graph.checkpointer import CIPHER, AesGcmCipher

CHECKPOINT_TABLES = {
    "checkpoint_blobs": ["thread_id", "checkpoint_ns", "channel", "version"],
    "checkpoint_writes": ["thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx"],
}


@dataclass
class RotationReport:
    """Values re-encrypted, per ``app.Model.field`` or checkpoint table, and those that
    could not be decrypted with any configured key."""

    rotated: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rotated.values())


def rotate_data() -> RotationReport:
    report = RotationReport()
    active = crypto.active_key_id()
    for model in apps.get_models():
        for model_field in model._meta.concrete_fields:
            if isinstance(model_field, EncryptedTextField):
                _rotate_column(model, model_field, active, report)
    tables = set(connection.introspection.table_names())
    for table, key_columns in CHECKPOINT_TABLES.items():
        if table in tables:
            _rotate_checkpoints(table, key_columns, active, report)
    return report


def _rotate_column(model, model_field, active: str, report: RotationReport) -> None:
    quote = connection.ops.quote_name
    table, column = quote(model._meta.db_table), quote(model_field.column)
    pk = quote(model._meta.pk.column)
    label = f"{model._meta.label}.{model_field.name}"
    rotated = failed = 0
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {pk}, {column} FROM {table} WHERE {column} LIKE 'v1:%%' "
                       f"AND split_part({column}, ':', 2) <> %s", [active])
        rows = cursor.fetchall()
        for key, token in rows:
            try:
                fresh = crypto.encrypt(crypto.decrypt(token))
            except crypto.DecryptionError:
                failed += 1
                continue
            cursor.execute(f"UPDATE {table} SET {column} = %s WHERE {pk} = %s AND {column} = %s",
                           [fresh, key, token])
            rotated += cursor.rowcount
    report.rotated[label] = rotated
    if failed:
        report.failed[label] = failed


def _rotate_checkpoints(table: str, key_columns: list[str], active: str,
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
