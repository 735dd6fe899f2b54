"""Model fields shared by the apps."""

from __future__ import annotations

import json
from typing import Any

from django.db import models

from . import crypto


class EncryptedTextField(models.TextField):
    """Text stored AES-256-GCM encrypted (``core.crypto``); Python sees plaintext.

    Values cannot be filtered on (each encryption differs). An empty string is
    stored as is, so "no secret" stays visible as such.
    """

    def from_db_value(self, value, expression, connection):
        if value in (None, ""):
            return value
        return crypto.decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value in (None, ""):
            return value
        return crypto.encrypt(value)


class EncryptedJSONField(EncryptedTextField):
    """JSON stored AES-256-GCM encrypted: Python sees the decoded value (``None`` stays
    NULL). Like ``EncryptedTextField`` it cannot be filtered on."""

    # For django-stubs' plugin: what the attribute takes and gives (any JSON value).
    _pyi_private_set_type: Any
    _pyi_private_get_type: Any

    def from_db_value(self, value, expression, connection):
        text = super().from_db_value(value, expression, connection)
        return None if text in (None, "") else json.loads(text)

    def to_python(self, value):
        return value

    def get_prep_value(self, value):
        if value is None:
            return None
        return super().get_prep_value(json.dumps(value, ensure_ascii=False))

    def value_to_string(self, obj) -> str:
        return json.dumps(self.value_from_object(obj), ensure_ascii=False)


class EncryptedBinaryField(models.BinaryField):
    """Bytes stored AES-256-GCM encrypted (``core.crypto.encrypt_bytes``): files kept in
    the database. Empty bytes are stored as they are."""

    def from_db_value(self, value, expression, connection):
        if value is None or len(value) == 0:
            return value if value is None else b""
        return crypto.decrypt_bytes(bytes(value))

    def get_db_prep_value(self, value, connection, prepared=False):
        if value is not None and len(value) > 0:
            value = crypto.encrypt_bytes(bytes(value))
        return super().get_db_prep_value(value, connection, prepared)
