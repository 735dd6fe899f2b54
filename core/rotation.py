"""Re-encrypting data at rest with the current key (``openclaw keys rotate-data``):
every ``EncryptedTextField`` (``EncryptedJSONField`` included) and ``EncryptedBinaryField``
of every model, then what the apps register for data kept outside such fields (the
conversation graph's checkpoints: ``chat.encryption``).

A value names the key that sealed it, so only values sealed with another key are
touched; each is rewritten only if it did not change meanwhile (compare-and-set).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.apps import apps
from django.db import connection

from . import crypto
from .fields import EncryptedBinaryField, EncryptedTextField


@dataclass
class RotationReport:
    """Values re-encrypted, per ``app.Model.field`` or checkpoint table, and those that
    could not be decrypted with any configured key."""

    rotated: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rotated.values())


# (active key id, report): re-encrypt what the app keeps and add it to the report.
Rotator = Callable[[str, RotationReport], None]
_rotators: list[Rotator] = []


def register_rotator(rotator: Rotator) -> None:
    """Add an app's own data at rest to ``rotate_data`` (from ``AppConfig.ready()``)."""
    if rotator not in _rotators:
        _rotators.append(rotator)


def rotate_data() -> RotationReport:
    report = RotationReport()
    active = crypto.active_key_id()
    for model in apps.get_models():
        for model_field in model._meta.concrete_fields:
            if isinstance(model_field, EncryptedTextField):
                _rotate_column(model, model_field, active, report)
            elif isinstance(model_field, EncryptedBinaryField):
                _rotate_binary_column(model, model_field, active, report)
    for rotator in _rotators:
        rotator(active, report)
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


def _rotate_binary_column(model, model_field, active: str, report: RotationReport) -> None:
    """Like ``_rotate_column`` for sealed bytes: the key ids are read from each value's
    head, then the values to rotate one at a time (a file may be large)."""
    quote = connection.ops.quote_name
    table, column = quote(model._meta.db_table), quote(model_field.column)
    pk = quote(model._meta.pk.column)
    label = f"{model._meta.label}.{model_field.name}"
    rotated = failed = 0
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {pk}, substring({column} from 1 for 70) FROM {table} "
                       f"WHERE length({column}) > 0")
        stale = [key for key, head in cursor.fetchall()
                 if crypto.key_id_of_bytes(bytes(head)) not in (None, active)]
        for key in stale:
            cursor.execute(f"SELECT {column} FROM {table} WHERE {pk} = %s", [key])
            found = cursor.fetchone()
            if found is None:
                continue
            token = bytes(found[0])
            try:
                fresh = crypto.encrypt_bytes(crypto.decrypt_bytes(token))
            except crypto.DecryptionError:
                failed += 1
                continue
            cursor.execute(f"UPDATE {table} SET {column} = %s WHERE {pk} = %s "
                           f"AND {column} = %s", [fresh, key, token])
            rotated += cursor.rowcount
    report.rotated[label] = rotated
    if failed:
        report.failed[label] = failed
