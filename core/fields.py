"""Model fields shared by the apps."""

from __future__ import annotations

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
