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
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import transaction

from . import shared_state

T = TypeVar("T")


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
        """Invalidate every process's copy now."""
        cache.set(self.name, uuid.uuid4().hex, timeout=None)

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
        self.token.bump()

    def changed(self, sender: type | None = None, **kwargs: Any) -> None:
        self.token.changed(sender, **kwargs)

    def peek(self) -> Held[T] | None:
        """The copy as kept, without checking the token (for callers that read the token
        themselves, in a round trip they make anyway)."""
        return self._held

    def clear(self) -> None:
        """Forget the copy: the next use rebuilds it."""
        self._held = None

    def held(self) -> Held[T]:
        """The copy, checked against the token (one cache GET), rebuilt if stale."""
        return self.held_at(self.current_version())

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
        version = await self.aversion()
        if held is not None and version is not None and held.version == version:
            return held
        if version is None:
            return await sync_to_async(self.held, thread_sensitive=self._thread_sensitive)()
        return await sync_to_async(self.held_at, thread_sensitive=self._thread_sensitive)(version)

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
    """Forget every copy of this process (tests)."""
    for snapshot in _snapshots:
        snapshot.clear()


def bump_all() -> None:
    """Invalidate every process's copies (tests)."""
    for snapshot in _snapshots:
        snapshot.bump()
