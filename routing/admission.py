"""Admission: may this request in? One service that every surface calls once per request
or turn — ``/v1`` (chat, legacy completions, Responses, Messages, embeddings), the
studio websocket (each message, regeneration, approval), workflow runs and resumes,
scheduled runs, batch lines.

It settles who asks — a principal: an API key (by its secret, or a key already known,
for a batch line) or a signed-in user —, whether they may: the key valid (not expired,
revoked or rotated out) and used from a network it allows (the client's address behind
trusted proxies, ``core.client_ip``), the model and workflow in its scope (a
``workflow/<slug>`` scope runs that workflow with its own model choice and never opens
another model); and it counts the request against the principal's limits — a key's
rpm, tpm and budget, a user's quota (``routing.quotas``) — checked and counted in one
Redis round trip, atomic across processes and replicas (``routing.limits.ADMIT``). A
request that may not in is refused with ``KeyRefused`` (401, 403, 429) before anything
is counted. One that may gets a ``Ticket``: what it reserved, settled with the tokens
it really used when it ends.

``admit`` runs on the event loop: the key or quota from this process's copy, the
counters and the copy's version token in one round trip (and, for ``/v1``, the version
tokens its later steps read: ``prefetch``); a stale copy is reloaded — a thread hop,
once per change — and the request counted again if its limits changed. ``admit_sync``
is the same from a thread (workers, the admin).

While Redis is away (``core.outage``) the copy is trusted as held and the limits are
counted in this process (``routing.limits.admit_locally``): the normal path still makes
its one round trip, and only its failure takes the local one.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.utils import timezone
from django.utils.translation import gettext as _

from core import shared_state
from core.outage import DB_UNAVAILABLE, LOCAL
from core.redis_pipeline import RedisReplyError, RedisUnavailable
from core.snapshot import VersionedSnapshot

from .key_models import ApiKey
from .keys import KEYS, KeyRefused, hash_secret
from .limits import (
    ADMIT,
    Counted,
    Limit,
    admit_locally,
    count,
    judge,
    key_limits,
    plan,
    quota_state,
    read,
)
from .limits import reserve as reserve_limits
from .quotas import QUOTAS, UserQuota, load_quota

LAST_USED_EVERY = timedelta(seconds=60)  # spare the database a write per request
WORKFLOW_PREFIX = "workflow/"
UNREAD = object()  # a version token not read (Redis away): the copy is trusted as held

T = TypeVar("T")


# --- the answer: a ticket ------------------------------------------------------------------


@dataclass
class Ticket:
    """An admitted request: who it is counted against and what it reserved. Settle it
    once the tokens it used are known (``settle_soon`` / ``asettle`` / ``settle``):
    the reservation becomes the real count. One admission may cover several model
    calls (legacy completions with several prompts): each settles its own tokens."""

    key: ApiKey | None
    user_id: int | None
    counted: Counted

    @property
    def api_key(self) -> ApiKey:
        """The key of a key's ticket (the ``/v1`` surfaces admit only keys)."""
        if self.key is None:
            raise TypeError("this ticket is a signed-in user's, not an API key's")
        return self.key

    def quota(self) -> dict[str, Any] | None:
        """The state the studio's quota bar shows (None: no limit to show)."""
        return quota_state(self.counted)

    def settle_soon(self, tokens: int) -> None:
        """Settle from the event loop, in the background: the answer does not wait, and
        the settlements of requests ending together share one Redis round trip."""
        _apply_soon(self.counted.settlement(tokens))

    def release_soon(self) -> None:
        """Take back all this admission counted (refused after it, e.g. by a later
        scope check)."""
        _apply_soon(self.counted.release())

    async def asettle(self, tokens: int) -> dict[str, Any] | None:
        """Settle from the event loop and wait for it; the quota's state after."""
        increments = self.counted.settlement(tokens)
        if increments:
            if shared_state.available():
                values = await shared_state.count(increments, [])
            else:
                values = await sync_to_async(count)(increments, [])
            self.counted.apply(increments, values)
        return self.quota()

    def settle(self, tokens: int) -> dict[str, Any] | None:
        """Settle from a thread; the quota's state after."""
        increments = self.counted.settlement(tokens)
        if increments:
            self.counted.apply(increments, count(increments, []))
        return self.quota()


def _apply_soon(increments: list[tuple[str, int, int]]) -> None:
    if not increments:
        return
    if shared_state.available():
        shared_state.add_soon(increments)
    else:
        shared_state.keep(asyncio.ensure_future(sync_to_async(count)(increments, [])))


# --- who may: keys -------------------------------------------------------------------------


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
    rotated out, 403 from a network the key does not allow). Nothing is counted: for
    the requests that start no model work (listing models, files, batches)."""
    if not secret:
        raise _missing()
    key = _lookup(secret)
    if key is None:
        raise _invalid()
    _check_valid(key, client_addr)
    _touch(key)
    return key


def _check_valid(key: ApiKey, client_addr: str | None, *, rotated: bool = True) -> None:
    """Refuse an expired, revoked or (``rotated``) rotated-out key, or one used from a
    network it does not allow (``client_addr`` None: no network to check)."""
    now = timezone.now()
    if key.revoked_at is not None:
        raise KeyRefused(401, "revoked_api_key", _("This API key has been revoked."))
    if key.expires_at is not None and key.expires_at <= now:
        raise KeyRefused(401, "expired_api_key", _("This API key has expired."))
    if rotated and key.grace_until is not None and key.grace_until <= now:
        raise KeyRefused(401, "rotated_api_key",
                         _("This API key was rotated and its grace period is over; "
                           "use its successor."))
    if client_addr is not None:
        _check_network(key, client_addr)


def _touch(key: ApiKey) -> None:
    """Note the key's use, at most once a minute (spares the database a write per
    request); skipped while the database is away — a held key keeps working."""
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_EVERY:
        try:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        except DB_UNAVAILABLE:
            close_old_connections()
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


def check_scope(key: ApiKey, model: str | None, workflow: str | None = None,
                own_model: str | None = None) -> None:
    """Refuse (403) what the key's scope does not list: ``model`` (the model the request
    picks; ``workflow/<slug>`` on ``/v1``), ``workflow`` (a slug the request runs). A
    workflow run may use ``own_model`` (the workflow's own choice) without it being
    listed; any other pick must be. An empty scope allows everything."""
    allowed = key.allowed_models
    if not allowed:
        return
    if workflow is not None and WORKFLOW_PREFIX + workflow not in allowed:
        raise KeyRefused(403, "model_not_allowed",
                         _("This API key may not run the workflow “%(workflow)s”.")
                         % {"workflow": workflow})
    if model is not None and model not in allowed and not (
            workflow is not None and model == own_model):
        raise KeyRefused(403, "model_not_allowed",
                         _("This API key may not use the model “%(model)s”.")
                         % {"model": model})


def _user_check(quota: UserQuota) -> tuple[Limit, ...]:
    if not quota.active:
        raise KeyRefused(401, "account_disabled", _("This account is disabled."))
    return quota.limits


# --- counting from the event loop ----------------------------------------------------------


@dataclass
class _Trip:
    """One admission round trip's reply: the version token, the verdict, the counts."""

    counted: Counted
    version: Any
    verdict: int
    values: list[Any]


async def _count(limits: tuple[Limit, ...], need: int, extra_tokens: int,
                 version_name: str | None, prefetch: bool) -> _Trip:
    """``ADMIT`` on ``limits`` with the version token (and the prefetched ones) read in
    the same round trip; nothing judged yet."""
    extra = shared_state.prefetched() if prefetch else []
    names = extra + ([version_name] if version_name is not None else [])
    counted, args = plan(limits, need, extra_tokens)
    try:
        if not limits:
            read_values = await shared_state.get_many(names)
            verdict, values = 0, []
        else:
            keys = [shared_state.full_key(name) for name in (*names, *counted.names)]
            reply = await shared_state.evaluate(ADMIT, keys, [len(names), *args])
            if not isinstance(reply, list):
                raise RedisReplyError(f"unexpected reply {reply!r}")
            read_values = [shared_state.loads(value) for value in reply[:len(names)]]
            verdict, values = int(reply[len(names)]), reply[len(names) + 1:]
    except RedisUnavailable:  # counted here; added to Redis when it returns
        verdict, values = admit_locally(counted, args) if limits else (0, [])
        return _Trip(counted, UNREAD, verdict, values)
    LOCAL.note(counted.names, values)
    if extra:
        shared_state.remember(dict(zip(extra, read_values, strict=False)))
    version = read_values[len(extra)] if version_name is not None else None
    return _Trip(counted, version, verdict, values)


async def _undo(trip: _Trip) -> None:
    """Take back what a trip added (a stale copy admitted the request by old limits)."""
    if not trip.verdict:
        increments = trip.counted.release()
        if increments:
            await shared_state.count(increments, [])


async def _fresh(snapshot: VersionedSnapshot, version: str | None) -> bool:
    """Whether ``version`` is still ``snapshot``'s (a refusal from a copy is confirmed so;
    while Redis is away the copy stands)."""
    try:
        (current,) = await shared_state.get_many([snapshot.name])
    except RedisUnavailable:
        return True
    return version is not None and current == version


async def _admit_copy(snapshot: VersionedSnapshot, ident: Any, load: Callable[[], T],
                      check: Callable[[T], tuple[Limit, ...]], need: int, extra: int,
                      prefetch: bool) -> tuple[T, Counted]:
    """The principal ``ident`` from this process's copy (``load`` reads it from the
    database into the copy), judged by ``check`` (which refuses or gives its limits),
    counted in one round trip with the copy's version token; reloaded and judged again
    when another process changed what the copy holds."""
    held = snapshot.peek()
    found = held.value.get(ident) if held is not None else None
    if found is None:
        found, held = await sync_to_async(load)(), snapshot.peek()
    try:
        limits = check(found)
    except KeyRefused:
        if await _fresh(snapshot, held.version if held else None):
            raise
        found, held = await sync_to_async(load)(), snapshot.peek()
        limits = check(found)
    trip = await _count(limits, need, extra, snapshot.name, prefetch)
    if trip.version is not UNREAD and (held is None or trip.version != held.version):
        # changed somewhere since copied
        try:
            found = await sync_to_async(load)()
            fresh = check(found)
        except KeyRefused:
            await _undo(trip)
            raise
        if fresh != limits:  # count by the new limits
            await _undo(trip)
            trip = await _count(fresh, need, extra, None, False)
    judge(trip.counted, trip.verdict, trip.values)
    return found, trip.counted


def _key_loader(secret: str, digest: str) -> Callable[[], ApiKey]:
    def load() -> ApiKey:
        close_old_connections()
        copies = KEYS.get()
        key = _lookup(secret)
        if key is None:
            raise _invalid()
        copies[digest] = key
        return key
    return load


def _known_key_loader(pk: int, digest: str) -> Callable[[], ApiKey]:
    def load() -> ApiKey:
        close_old_connections()
        copies = KEYS.get()
        key = ApiKey.objects.filter(pk=pk).first()
        if key is None:
            raise _invalid()
        copies[digest] = key
        return key
    return load


def _quota_loader(user_id: int) -> Callable[[], UserQuota]:
    def load() -> UserQuota:
        close_old_connections()
        return load_quota(user_id)
    return load


def _key_check(client_addr: str | None, scope: tuple[str | None, str | None, str | None],
               rotated: bool = True) -> Callable[[ApiKey], tuple[Limit, ...]]:
    def check(key: ApiKey) -> tuple[Limit, ...]:
        _check_valid(key, client_addr, rotated=rotated)
        check_scope(key, *scope)
        return key_limits(key)
    return check


async def admit(*, secret: str | None = None, user: Any = None, key: ApiKey | None = None,
                client_addr: str | None = None, model: str | None = None,
                workflow: str | None = None, own_model: str | None = None,
                tokens: int = 0, reserve: int = 0, prefetch: bool = False) -> Ticket:
    """Admit one request or turn, from the event loop (see the module's docstring).

    The principal: ``user`` (a signed-in Django user: their quota), else ``key`` (a key
    already known — a batch line: no network, a rotation hands its work on), else the
    key whose ``secret`` the request presents (``client_addr``: the client's address,
    as ``core.client_ip`` finds it). ``model`` / ``workflow`` / ``own_model``: what it
    runs (``check_scope``). ``tokens``: its prompt's estimate, which must fit;
    ``reserve``: what it may add (``max_tokens``), reserved with it. ``prefetch``: read
    the ``/v1`` path's version tokens in the same round trip. ``KeyRefused`` refuses."""
    if not shared_state.available():
        return await sync_to_async(admit_sync)(
            secret=secret, user=user, key=key, client_addr=client_addr, model=model,
            workflow=workflow, own_model=own_model, tokens=tokens, reserve=reserve)
    scope = (model, workflow, own_model)
    if user is not None:
        _quota, counted = await _admit_copy(QUOTAS, user.pk, _quota_loader(user.pk),
                                            _user_check, tokens, reserve, prefetch)
        return Ticket(None, user.pk, counted)
    if key is not None:
        loader, check = _known_key_loader(key.pk, key.secret_hash), _key_check(
            None, scope, rotated=False)
        found, counted = await _admit_copy(KEYS, key.secret_hash, loader, check, tokens,
                                           reserve, prefetch)
        return Ticket(found, None, counted)
    if not secret:
        raise _missing()
    digest = hash_secret(secret)
    found, counted = await _admit_copy(KEYS, digest, _key_loader(secret, digest),
                                       _key_check(client_addr, scope), tokens, reserve,
                                       prefetch)
    if found.last_used_at is None or timezone.now() - found.last_used_at > LAST_USED_EVERY:
        await sync_to_async(_touch)(found)
    return Ticket(found, None, counted)


# --- from a thread -------------------------------------------------------------------------


def admit_sync(*, secret: str | None = None, user: Any = None, key: ApiKey | None = None,
               client_addr: str | None = None, model: str | None = None,
               workflow: str | None = None, own_model: str | None = None,
               tokens: int = 0, reserve: int = 0) -> Ticket:
    """``admit`` from a thread (a worker, the admin, a sync view): the copy checked with
    one cache read, the counters with one more round trip."""
    scope = (model, workflow, own_model)
    if user is not None:
        quota = QUOTAS.get().get(user.pk) or load_quota(user.pk)
        return Ticket(None, user.pk, reserve_limits(_user_check(quota), tokens, reserve))
    if key is not None:
        found = KEYS.get().get(key.secret_hash) or _known_key_loader(
            key.pk, key.secret_hash)()
        limits = _key_check(None, scope, rotated=False)(found)
        return Ticket(found, None, reserve_limits(limits, tokens, reserve))
    found = authenticate(secret, client_addr or "")
    check_scope(found, *scope)
    return Ticket(found, None, reserve_limits(key_limits(found), tokens, reserve))


def user_quota(user: Any) -> dict[str, Any] | None:
    """A signed-in user's quota as the studio's bar shows it now (None: no quota)."""
    quota = QUOTAS.get().get(user.pk) or load_quota(user.pk)
    return quota_state(read(quota.limits)) if quota.limits else None
