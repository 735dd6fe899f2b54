"""AES-256-GCM for secrets and content at rest.

A stored value reads ``v1:<key id>:<base64(nonce | ciphertext+tag)>``: the key
id travels with each value, so keys can be rotated (the first key in
``settings.ENCRYPTION_KEYS`` encrypts, all of them decrypt). Bytes (files kept in
the database) are sealed the same way without the base64: ``b"v1:<key id>:" + nonce
+ ciphertext+tag`` (``encrypt_bytes``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

PREFIX = "v1"
NONCE_BYTES = 12


class DecryptionError(Exception):
    """A stored value cannot be decrypted with the configured keys."""


def _keys() -> dict[str, bytes]:
    return settings.ENCRYPTION_KEYS


def active_key_id() -> str:
    return next(iter(_keys()))


def encrypt(plaintext: str, associated_data: bytes = b"") -> str:
    key_id = active_key_id()
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(_keys()[key_id]).encrypt(nonce, plaintext.encode(), associated_data)
    return f"{PREFIX}:{key_id}:{base64.b64encode(nonce + sealed).decode()}"


def key_id_of(token: str) -> str | None:
    parts = token.split(":", 2)
    return parts[1] if len(parts) == 3 and parts[0] == PREFIX else None


def decrypt(token: str, associated_data: bytes = b"") -> str:
    key_id = key_id_of(token)
    if key_id is None:
        raise DecryptionError("not an encrypted value")
    key = _keys().get(key_id)
    if key is None:
        raise DecryptionError(f"encryption key {key_id!r} is not configured")
    raw = base64.b64decode(token.split(":", 2)[2])
    try:
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated_data).decode()
    except InvalidTag:
        raise DecryptionError(f"value does not decrypt with key {key_id!r}") from None


def encrypt_bytes(plaintext: bytes) -> bytes:
    key_id = active_key_id()
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(_keys()[key_id]).encrypt(nonce, plaintext, None)
    return f"{PREFIX}:{key_id}:".encode() + nonce + sealed


def key_id_of_bytes(token: bytes) -> str | None:
    """The key id a sealed value names (its first 70 bytes are enough), or None."""
    prefix = f"{PREFIX}:".encode()
    if bytes(token[:len(prefix)]) != prefix:
        return None
    key_id, sep, _rest = bytes(token[len(prefix):len(prefix) + 65]).partition(b":")
    try:
        return key_id.decode("ascii") if sep and key_id else None
    except UnicodeDecodeError:
        return None


def decrypt_bytes(token: bytes) -> bytes:
    key_id = key_id_of_bytes(token)
    if key_id is None:
        raise DecryptionError("not an encrypted value")
    key = _keys().get(key_id)
    if key is None:
        raise DecryptionError(f"encryption key {key_id!r} is not configured")
    raw = memoryview(token)[len(PREFIX) + len(key_id) + 2:]
    try:
        return AESGCM(key).decrypt(bytes(raw[:NONCE_BYTES]), bytes(raw[NONCE_BYTES:]), None)
    except InvalidTag:
        raise DecryptionError(f"value does not decrypt with key {key_id!r}") from None


def keyed_digest(data: bytes, purpose: str) -> str:
    """HMAC-SHA256 of ``data`` (hex) under a key derived from the active key for
    ``purpose``: a lookup key that, unlike a plain hash, confirms no guessed content to
    whoever lacks the keys (it changes when the active key does)."""
    return hmac.new(_derived_key(_keys()[active_key_id()], purpose), data,
                    hashlib.sha256).hexdigest()


@functools.lru_cache(maxsize=64)
def _derived_key(key: bytes, purpose: str) -> bytes:
    return hmac.new(key, f"openclaw:{purpose}".encode(), hashlib.sha256).digest()


def parse_keys(spec: str) -> dict[str, bytes]:
    """``"k2:<base64 32 bytes>,k1:<…>"`` → ordered {key id: key}; the first encrypts."""
    keys: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key_id, _, encoded = item.partition(":")
        try:
            key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            key = b""
        if not key_id or len(key) != 32:
            raise ValueError(f"key {key_id or item!r} must be '<id>:<base64 of 32 bytes>'")
        keys[key_id] = key
    if not keys:
        raise ValueError("no key given")
    return keys


def new_key_spec(key_id: str = "k1") -> str:
    return f"{key_id}:{base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip('=')}"
