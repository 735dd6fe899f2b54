"""Admission: may this request in? The key a request presents — valid, not expired,
revoked or rotated out, from an allowed network —, the model in its scope, and its
limits counted (``routing.limits``). Every surface calls it: ``/v1`` from the event
loop (``admit``), the studio websocket and the other views in a thread
(``authenticate``).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.utils import timezone
from django.utils.translation import gettext as _

from core import shared_state

from .key_models import ApiKey
from .keys import KEYS, KeyRefused, hash_secret
from .limits import check_limits, count, judge, limit_check, usage_increments

LAST_USED_EVERY = timedelta(seconds=60)  # spare the database a write per request


def _missing() -> KeyRefused:
    return KeyRefused(401, "missing_api_key",
                      _("No API key: send it as “Authorization: Bearer <key>”."))


def _invalid() -> KeyRefused:
    return KeyRefused(401, "invalid_api_key", _("The API key is not valid."))


def _lookup(secret: str) -> ApiKey | None:
    """The key whose secret this is, from the database (None when none)."""
    prefix = secret.split(".", 1)[0]
    key = ApiKey.objects.filter(prefix=prefix).first() if "." in secret else None
    if key is None or not hmac.compare_digest(key.secret_hash, hash_secret(secret)):
        return None
    return key


def authenticate(secret: str | None, client_addr: str) -> ApiKey:
    """The key a request presents, or ``KeyRefused`` (401 unknown/expired/revoked/
    rotated out, 403 from a network the key does not allow)."""
    if not secret:
        raise _missing()
    key = _lookup(secret)
    if key is None:
        raise _invalid()
    _check_valid(key, client_addr)
    _touch(key)
    return key


def _check_valid(key: ApiKey, client_addr: str) -> None:
    now = timezone.now()
    if key.revoked_at is not None:
        raise KeyRefused(401, "revoked_api_key", _("This API key has been revoked."))
    if key.expires_at is not None and key.expires_at <= now:
        raise KeyRefused(401, "expired_api_key", _("This API key has expired."))
    if key.grace_until is not None and key.grace_until <= now:
        raise KeyRefused(401, "rotated_api_key",
                         _("This API key was rotated and its grace period is over; "
                           "use its successor."))
    _check_network(key, client_addr)


def _touch(key: ApiKey) -> None:
    """Note the key's use, at most once a minute (spares the database a write per request)."""
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_EVERY:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now


def _check_network(key: ApiKey, client_addr: str) -> None:
    if not key.allowed_cidrs:
        return
    try:
        ip = ipaddress.ip_address(client_addr)
    except ValueError:
        ip = None
    if ip is None or not any(ip in ipaddress.ip_network(c, strict=False)
                             for c in key.allowed_cidrs):
        raise KeyRefused(403, "ip_not_allowed",
                         _("This API key may not be used from %(addr)s.")
                         % {"addr": client_addr})


def check_scope(key: ApiKey, model: str) -> None:
    if key.allowed_models and model not in key.allowed_models:
        raise KeyRefused(403, "model_not_allowed",
                         _("This API key may not use the model “%(model)s”.")
                         % {"model": model})


def _load_copy(secret: str, digest: str) -> ApiKey | None:
    """Read the key from the database into this process's copies (the version is read
    first, so a change racing with the read leaves the copy stale-marked, not stale)."""
    close_old_connections()
    copies = KEYS.get()
    key = _lookup(secret)
    if key is not None:
        copies[digest] = key
    return key


async def admit(secret: str | None, client_addr: str, model: str | None,
                tokens: int) -> ApiKey:
    """``authenticate`` + ``check_scope`` + ``check_limits`` for the event loop: the key
    from this process's copy, its validity checked in Python, its counters and the keys'
    version token in one Redis round trip. A stale copy is reloaded (a thread hop, once
    per change) and judged again against the counts already taken."""
    if not secret:
        raise _missing()
    if not shared_state.available():
        return await sync_to_async(_admit_sync)(secret, client_addr, model, tokens)
    digest = hash_secret(secret)
    held = KEYS.peek()
    key = held.value.get(digest) if held is not None else None
    if key is None:
        key = await sync_to_async(_load_copy)(secret, digest)
        if key is None:
            raise _invalid()
        held = KEYS.peek()
    check = limit_check(key)
    counts, version = await shared_state.count_with(
        check.increments if check else [], check.reads if check else [], KEYS.name)
    if held is None or version != held.version:  # a key changed somewhere since this copy was taken
        key = await sync_to_async(_load_copy)(secret, digest)
        if key is None:
            raise _invalid()
        fresh = limit_check(key)
        if fresh is None or check is None or (fresh.increments, fresh.reads) != (
                check.increments, check.reads):  # its limits changed: count by the new ones
            counts = await shared_state.count(fresh.increments, fresh.reads) if fresh else []
        check = fresh
    _check_valid(key, client_addr)
    if model is not None:
        check_scope(key, model)
    if check is not None:
        judge(key, check, counts, tokens)
    if key.last_used_at is None or timezone.now() - key.last_used_at > LAST_USED_EVERY:
        await sync_to_async(_touch)(key)
    return key


def _admit_sync(secret: str, client_addr: str, model: str | None, tokens: int) -> ApiKey:
    key = authenticate(secret, client_addr)
    if model is not None:
        check_scope(key, model)
    check_limits(key, tokens)
    return key


def record_usage_soon(key: ApiKey, tokens: int) -> None:
    """``record_usage`` from the event loop, in the background: the answer does not wait,
    and the additions of requests ending together share one Redis round trip."""
    increments = usage_increments(key, tokens)
    if not increments:
        return
    if shared_state.available():
        shared_state.add_soon(increments)
    else:
        shared_state.keep(asyncio.ensure_future(sync_to_async(count)(increments, [])))


