"""API keys: issue, rotate, hand over and revoke; and this process's copy of the keys it
has seen (``KEYS``), which every process drops when any key changes.

The secret is shown once: only its SHA-256 and a visible prefix are stored. Admission
(authentication, scope, limits) is ``routing.admission``; the counters,
``routing.limits``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q, QuerySet, Value
from django.utils import timezone
from django.utils.translation import gettext as _

from core.audit import audit
from core.snapshot import VersionedSnapshot

from .key_models import ApiKey

PREFIX_MARK = "oc_"


@dataclass
class KeyRefused(Exception):
    """Why a request is refused: an HTTP status, a stable code and a message for people
    (and, for a spent limit, the quota's state the studio shows)."""

    status: int
    code: str
    message: str
    retry_after: int | None = None
    quota: dict[str, Any] | None = None

    def __str__(self) -> str:
        return self.message


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def assign_secret(key: ApiKey) -> str:
    """Give an unsaved key a fresh prefix and secret hash; return the secret (once)."""
    prefix = PREFIX_MARK + secrets.token_urlsafe(6)[:8]
    secret = f"{prefix}.{secrets.token_urlsafe(32)}"
    key.prefix, key.secret_hash = prefix, hash_secret(secret)
    if not key.family:
        key.family = prefix
    return secret


def create_key(name: str, **fields: object) -> tuple[ApiKey, str]:
    """Create a key from model fields (``allowed_models``, ``rpm_limit``, …); the
    secret is returned here and never again."""
    key = ApiKey(name=name, **fields)
    secret = assign_secret(key)
    key.full_clean()
    with transaction.atomic():
        key.save()
    audit("key.create", target=key.prefix, detail={"name": name})
    return key, secret


# --- this process's copy of the keys seen ------------------------------------------------
#
# ``/v1`` authenticates every request. Reading the key from the database would cost a
# query and a hop to a thread each time; instead each process keeps the keys it has
# seen (by secret hash), dropped whenever any key changed (saved, deleted, revoked,
# rotated — in any process). The version token is read in the same Redis round trip
# that counts the request against the key's limits (``routing.admission.admit``).

KEYS: VersionedSnapshot[dict[str, ApiKey]] = VersionedSnapshot(
    "routing:keys:version", lambda version: {})
# Invalidate every process's key copies once the current transaction commits
# (post_save/post_delete receiver; call it after a bulk ``.update()`` of keys).
keys_changed = KEYS.changed


# --- rotation and revocation --------------------------------------------------

COPIED_FIELDS = ("name", "family", "owner_id", "allowed_models", "allowed_cidrs", "rpm_limit",
                 "tpm_limit", "token_budget", "budget_period", "expires_at", "rotation_hours")


def rotate_key(key: ApiKey, grace_hours: float | None = None) -> tuple[ApiKey, str]:
    """Issue ``key``'s successor with the same settings; ``key`` keeps working for
    ``grace_hours`` (default ``OPENCLAW_KEY_ROTATION_GRACE_HOURS``), then is refused."""
    if grace_hours is None:
        grace_hours = settings.OPENCLAW_KEY_ROTATION_GRACE_HOURS
    with transaction.atomic():
        old = ApiKey.objects.select_for_update().get(pk=key.pk)
        if old.revoked_at is not None or old.grace_until is not None:
            raise KeyRefused(409, "not_rotatable",
                             _("Key %(prefix)s is revoked or already rotated.")
                             % {"prefix": old.prefix})
        new = ApiKey(rotated_from=old, **{f: getattr(old, f) for f in COPIED_FIELDS})
        secret = assign_secret(new)
        new.save()
        old.grace_until = timezone.now() + timedelta(hours=grace_hours)
        old.successor_secret = secret  # for a rotation nobody watched: see claim_successor
        old.save(update_fields=["grace_until", "successor_secret"])
    key.grace_until = old.grace_until
    audit("key.rotate", target=old.prefix, detail={"successor": new.prefix,
                                                   "grace_until": old.grace_until.isoformat()})
    return new, secret


def claim_successor(key: ApiKey) -> tuple[ApiKey, str]:
    """The successor of a rotated ``key`` and its secret, handed over once.

    Automatic rotation happens with nobody watching; the holder of the old key,
    still valid during its grace period, fetches the new secret with it.
    """
    with transaction.atomic():
        old = ApiKey.objects.select_for_update().get(pk=key.pk)
        successor = old.successors.order_by("-created_at").first()
        if old.grace_until is None or successor is None or not old.successor_secret:
            raise KeyRefused(404, "no_successor",
                             _("This key has no successor to hand over (not rotated, or "
                               "its successor's secret was already fetched)."))
        secret, old.successor_secret = old.successor_secret, ""
        old.save(update_fields=["successor_secret"])
    return successor, secret


def revoke_key(key: ApiKey) -> None:
    with transaction.atomic():
        ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now())
        keys_changed()  # .update() sends no signal: invalidate the processes' key copies
    key.refresh_from_db(fields=["revoked_at"])
    audit("key.revoke", target=key.prefix)


def due_for_rotation(now: datetime | None = None) -> QuerySet[ApiKey]:
    now = now or timezone.now()
    return (ApiKey.objects
            .filter(rotation_hours__gt=0, revoked_at__isnull=True, grace_until__isnull=True)
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
            .alias(due_at=ExpressionWrapper(
                F("created_at") + F("rotation_hours") * Value(timedelta(hours=1)),
                output_field=DateTimeField()))
            .filter(due_at__lte=now))


def rotate_due_keys() -> list[str]:
    """Rotate every key whose ``rotation_hours`` have passed; the prefixes of the
    successors. (Beat runs it every few minutes.)"""
    issued = []
    for key in due_for_rotation():
        try:
            new, _secret = rotate_key(key)
        except KeyRefused:  # rotated by hand meanwhile
            continue
        issued.append(new.prefix)
    return issued
