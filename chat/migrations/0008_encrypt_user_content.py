"""Conversation titles (the start of the first user message) are encrypted at rest,
like messages: the column becomes text and every existing title is sealed with the
current key. Reversible: going back decrypts them into the old ``varchar(200)``."""

import core.fields
from core import crypto
from django.db import migrations

TABLE, COLUMN = "chat_conversation", "title"


def _sealed(value: str) -> bool:
    try:
        crypto.decrypt(value)
    except (crypto.DecryptionError, ValueError):
        return False
    return True


def seal_titles(apps, schema_editor):
    connection = schema_editor.connection
    table, column = connection.ops.quote_name(TABLE), connection.ops.quote_name(COLUMN)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, {column} FROM {table} WHERE {column} <> ''")
        for pk, title in cursor.fetchall():
            if not _sealed(title):  # a plain title may itself start with "v1:"
                cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s",
                               [crypto.encrypt(title), pk])


def open_titles(apps, schema_editor):
    connection = schema_editor.connection
    table, column = connection.ops.quote_name(TABLE), connection.ops.quote_name(COLUMN)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, {column} FROM {table} WHERE {column} LIKE 'v1:%%'")
        for pk, token in cursor.fetchall():
            cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s",
                           [crypto.decrypt(token)[:200], pk])


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0007_stored_responses"),
    ]

    operations = [
        migrations.AlterField(
            model_name="conversation",
            name="title",
            field=core.fields.EncryptedTextField(blank=True, max_length=200,
                                                 verbose_name="title"),
        ),
        migrations.RunPython(seal_titles, open_titles, elidable=False),
    ]
