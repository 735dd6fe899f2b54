"""Batch files, batch lines' request and response bodies and datasets are encrypted at
rest, like messages: the bodies' columns become text (sealed JSON), the files' bytes
are sealed in place (``core.crypto.encrypt_bytes``), every existing row with the
current key. Reversible: going back decrypts them (the bodies into ``jsonb`` again).
Files are handled one row at a time: each may be large."""

import core.fields
from core import crypto
from django.db import migrations

BINARY = [("jobs_batchfile", "id", "content"), ("jobs_dataset", "id", "content")]
JSON = [("jobs_batchline", "id", "body"), ("jobs_batchline", "id", "response")]


def _text_sealed(value: str) -> bool:
    try:
        crypto.decrypt(value)
    except (crypto.DecryptionError, ValueError):
        return False
    return True


def _bytes_sealed(value: bytes) -> bool:
    try:
        crypto.decrypt_bytes(value)
    except (crypto.DecryptionError, ValueError):
        return False
    return True


def _each(schema_editor, columns, change, batch: int) -> None:
    """``change(value)`` → the new value (None: leave it) of every non-null cell, read
    ``batch`` rows at a time in key order."""
    connection = schema_editor.connection
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for table, pk, column in columns:
            table, pk, column = quote(table), quote(pk), quote(column)
            last = None
            while True:
                after = "" if last is None else f"AND {pk} > %s"
                cursor.execute(f"SELECT {pk}, {column} FROM {table} WHERE {column} IS NOT "
                               f"NULL {after} ORDER BY {pk} LIMIT {batch}",
                               [] if last is None else [last])
                rows = cursor.fetchall()
                if not rows:
                    break
                for key, value in rows:
                    new = change(value)
                    if new is not None:
                        cursor.execute(f"UPDATE {table} SET {column} = %s WHERE {pk} = %s",
                                       [new, key])
                last = rows[-1][0]


def _seal_bytes(value) -> bytes | None:
    value = bytes(value)
    return crypto.encrypt_bytes(value) if value and not _bytes_sealed(value) else None


def _open_bytes(value) -> bytes | None:
    value = bytes(value)
    return crypto.decrypt_bytes(value) if value and _bytes_sealed(value) else None


def _seal_text(value: str) -> str | None:
    return crypto.encrypt(value) if value and not _text_sealed(value) else None


def _open_text(value: str) -> str | None:
    return crypto.decrypt(value) if value and _text_sealed(value) else None


def seal(apps, schema_editor):
    _each(schema_editor, BINARY, _seal_bytes, batch=1)  # a file may be large
    _each(schema_editor, JSON, _seal_text, batch=1000)


def unseal(apps, schema_editor):
    _each(schema_editor, BINARY, _open_bytes, batch=1)
    _each(schema_editor, JSON, _open_text, batch=1000)


class Migration(migrations.Migration):

    dependencies = [
        ("jobs", "0002_job_base_and_tables"),
    ]

    operations = [
        migrations.AlterField(
            model_name="batchfile",
            name="content",
            field=core.fields.EncryptedBinaryField(verbose_name="content"),
        ),
        migrations.AlterField(
            model_name="batchline",
            name="body",
            field=core.fields.EncryptedJSONField(verbose_name="request body"),
        ),
        migrations.AlterField(
            model_name="batchline",
            name="response",
            field=core.fields.EncryptedJSONField(blank=True, null=True,
                                                 verbose_name="response body"),
        ),
        migrations.AlterField(
            model_name="dataset",
            name="content",
            field=core.fields.EncryptedBinaryField(verbose_name="content"),
        ),
        migrations.RunPython(seal, unseal, elidable=False),
    ]
