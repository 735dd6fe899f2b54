"""AES-256-GCM at rest: round trip, key rotation, tampering, and what the database holds."""

import pytest
from django.db import connection

from core import crypto
from routing.models import ModelEndpoint


def test_encrypt_round_trip_and_each_ciphertext_differs():
    first = crypto.encrypt("sk-live-123")
    second = crypto.encrypt("sk-live-123")

    assert first != second
    assert first.startswith(f"v1:{crypto.active_key_id()}:")
    assert crypto.decrypt(first) == crypto.decrypt(second) == "sk-live-123"


def test_old_values_still_decrypt_after_a_new_key_becomes_active(settings):
    old_token = crypto.encrypt("secret")
    old_keys = dict(settings.ENCRYPTION_KEYS)

    settings.ENCRYPTION_KEYS = {**crypto.parse_keys(crypto.new_key_spec("k2")), **old_keys}

    assert crypto.active_key_id() == "k2"
    assert crypto.key_id_of(crypto.encrypt("x")) == "k2"
    assert crypto.decrypt(old_token) == "secret"


def test_tampered_or_unknown_key_values_are_refused(settings):
    token = crypto.encrypt("secret")
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")

    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(tampered)
    settings.ENCRYPTION_KEYS = crypto.parse_keys(crypto.new_key_spec("other"))
    with pytest.raises(crypto.DecryptionError, match="not configured"):
        crypto.decrypt(token)


@pytest.mark.parametrize("spec", ["", "k1:short", "nokey", "k1:%%%"])
def test_bad_key_specs_are_refused(spec):
    with pytest.raises(ValueError):
        crypto.parse_keys(spec)


@pytest.mark.django_db
def test_raw_database_row_holds_no_plaintext_api_key():
    ModelEndpoint.objects.create(name="m", engine="openai", endpoint_url="http://x/v1",
                                 api_key="sk-plaintext-visible-0001")

    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM routing_modelendpoint")
        raw = cursor.fetchone()[0]

    assert "sk-plaintext" not in raw
    assert raw.startswith("v1:")
    assert ModelEndpoint.objects.get().api_key == "sk-plaintext-visible-0001"
