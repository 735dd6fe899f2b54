"""Per-process copies of database state, and how a copy learns that another process
changed what it copied.

The routing table (rules and endpoints), the API keys seen, the plugin chain and the
workflow plans are read on every request; each process keeps a copy of them in a
``VersionedSnapshot``. A ``VersionToken`` — a random value under a name in the Django
cache (Redis, shared by every web replica and worker) — says which version a copy is
of: a change replaces the token once its transaction commits, and a copy built under
another token is rebuilt before it is used. A token that is missing (first use, or
evicted) is created fresh, which invalidates every copy as well.

Sync code checks the token with one cache GET (``get``); async code reads it from the
event loop through ``core.shared_state`` — usually for free, since the ``/v1`` path
reads every ``prefetch`` token in its first Redis round trip — and goes to a thread
only to rebuild (``aget``).

While Redis is away (``core.outage``) a copy is used as held, unchecked, and one that is
missing is built from the database under the version ``OFFLINE``. A change made meanwhile
drops its own process's copy and cannot tell the others: its process replaces the token
when it finds Redis back, and every process that noticed the outage drops all its copies
then.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import close_old_connections, transaction

from . import shared_state
from .outage import OUTAGE, UNAVAILABLE

logger = logging.getLogger(__name__)

T = TypeVar("T")
OFFLINE = "offline"  # the version of a copy built while Redis was away (no token matches)


class VersionToken:
    """The current version of one kind of shared state, in the Django cache."""

    def __init__(self, name: str):
        self.name = name

    def current(self) -> str:
        version = cache.get(self.name)
        if version is None:
            cache.add(self.name, uuid.uuid4().hex, timeout=None)
            version = cache.get(self.name)
        return version

    def bump(self) -> None:
        """Invalidate every process's copy now (while Redis is away: once it returns)."""
        try:
            cache.set(self.name, uuid.uuid4().hex, timeout=None)
        except UNAVAILABLE as exc:
            OUTAGE.mark_down(exc)
            _unannounced.add(self)
            logger.warning("%s changed while Redis is away: announced when it returns",
                           self.name)

    def changed(self, sender: type | None = None, **kwargs: Any) -> None:
        """Invalidate every copy once the current transaction commits (a post_save /
        post_delete receiver; call it after a bulk ``.update()`` too, which sends none)."""
        transaction.on_commit(self.bump)


@dataclass(frozen=True)
class Held(Generic[T]):
    """A copy and the version it was built under."""

    version: str
    value: T


_snapshots: list[VersionedSnapshot] = []
_unannounced: set[VersionToken] = set()  # changed while Redis was away


class VersionedSnapshot(Generic[T]):
    """This process's copy of something built from the database (``build(version)``),
    rebuilt when the token ``name`` changed. ``prefetch``: the ``/v1`` path reads the
    token in its first Redis round trip, so an async ``aget`` costs no round trip."""

    def __init__(self, name: str, build: Callable[[str], T], *, prefetch: bool = False,
                 thread_sensitive: bool = True):
        self.token = VersionToken(name)
        self.name = name
        self._build = build
        self._held: Held[T] | None = None
        self._lock = threading.Lock()
        self._thread_sensitive = thread_sensitive
        if prefetch:
            shared_state.prefetch(name)
        _snapshots.append(self)

    def current_version(self) -> str:
        return self.token.current()

    def bump(self) -> None:
        self.clear()  # this process's copy at once, even while Redis is away
        self.token.bump()

    def changed(self, sender: type | None = None, **kwargs: Any) -> None:
        """``VersionToken.changed``, and this process's copy dropped with it."""
        transaction.on_commit(self.bump)

    def peek(self) -> Held[T] | None:
        """The copy as kept, without checking the token (for callers that read the token
        themselves, in a round trip they make anyway)."""
        return self._held

    def clear(self) -> None:
        """Forget the copy: the next use rebuilds it."""
        self._held = None

    def held(self) -> Held[T]:
        """The copy, checked against the token (one cache GET), rebuilt if stale; while
        Redis is away, the copy as held (built under ``OFFLINE`` if there is none)."""
        try:
            shared_state.recover_sync()
            version = self.current_version()
        except UNAVAILABLE as exc:
            OUTAGE.mark_down(exc)
            return self._held or self.held_at(OFFLINE)
        return self.held_at(version)

    def held_at(self, version: str) -> Held[T]:
        """The copy of ``version`` (a token just read), built now if the kept one is not."""
        held = self._held
        if held is None or held.version != version:
            with self._lock:
                held = self._held
                if held is None or held.version != version:
                    held = self._held = Held(version, self._build(version))
        return held

    def get(self) -> T:
        return self.held().value

    async def aheld(self) -> Held[T]:
        """``held`` for async code: the token read from the event loop (the request's own
        read of it, else one GET); a thread only to rebuild."""
        held = self._held
        try:
            version = await self.aversion()
        except UNAVAILABLE:
            if held is not None:
                return held  # Redis away: the copy as held
            version = None  # built in a thread, under OFFLINE if Redis is still away
        if held is not None and version is not None and held.version == version:
            return held
        return await sync_to_async(self._held_in_thread,
                                   thread_sensitive=self._thread_sensitive)(version)

    def _held_in_thread(self, version: str | None) -> Held[T]:
        """``held`` (``version`` None) or ``held_at`` in a thread outside Django's request
        cycle: the thread's connection is checked first, as a request's would be, so one
        a database restart broke is replaced rather than failing the rebuild."""
        close_old_connections()
        return self.held() if version is None else self.held_at(version)

    async def aget(self) -> T:
        return (await self.aheld()).value

    async def aversion(self) -> str | None:
        """The token as this request read it, else read now from the event loop; None
        when the cache is not Redis (or the token is missing)."""
        if not shared_state.available():
            return None
        version = shared_state.seen(self.name)
        if version is None:
            (version,) = await shared_state.get_many([self.name])
        return version


def clear_all() -> None:
    """Forget every copy of this process (tests; and when Redis returns after an outage)."""
    for snapshot in _snapshots:
        snapshot.clear()


def _announce() -> None:
    """Replace the tokens of the changes made while Redis was away."""
    for token in list(_unannounced):
        _unannounced.discard(token)
        token.bump()


OUTAGE.on_recovery(clear_all)
OUTAGE.on_recovery(_announce)


def bump_all() -> None:
    """Invalidate every process's copies (tests)."""
    for snapshot in _snapshots:
        snapshot.bump()
