"""Active runs of a conversation, shared by every process through the Django cache
(Redis), and the double-texting policies that decide what a send does while a run of
the same conversation is still active:

* ``enqueue`` (default) — wait until the active run ends, then run;
* ``reject`` — refuse the new message (409 ``run_active``), store nothing;
* ``interrupt`` — cancel the active run (its message stays, without an answer) and
  run the new one;
* ``rollback`` — cancel the active run, delete its message (and answer, if any) and
  run the new one from the checkpoint the cancelled run started from.

A run holds a lease (``cache.add``: atomic in Redis) that it renews while it runs, so
a process that dies frees the conversation within ``LEASE_S``. Cancelling is a flag
the running turn's watcher polls; it ends within ``POLL_S``. Waiting sends are not
served in arrival order when several wait at once (each polls the lease).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import F
from django.utils.translation import gettext as _

from core import shared_state

from .. import conversations
from ..models import Conversation, DoubleTexting, Message

logger = logging.getLogger(__name__)

LEASE_S = 30
RENEW_S = 5.0
POLL_S = 0.05


class RunRefused(Exception):
    """A send that the policy refuses, or that waited too long."""

    def __init__(self, code: str, message: str, status: int = 409):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class RunCancelled(Exception):
    """The run was cancelled by a later send (``interrupt`` or ``rollback``)."""

    def __init__(self, policy: str):
        super().__init__(policy)
        self.policy = policy


def _cached(operation):
    """A cache call off the event loop, on any thread: Redis needs none of the one
    thread that ``thread_sensitive`` calls (the ORM's) share, and a running turn polls."""
    return sync_to_async(operation, thread_sensitive=False)


def _key(conversation_id: str) -> str:
    return f"chat:run:{conversation_id}"


def _cancel_key(conversation_id: str) -> str:
    return f"chat:run:{conversation_id}:cancel"


def _from_key(conversation_id: str) -> str:
    return f"chat:run:{conversation_id}:rolled-back-to"


@dataclass
class Lease:
    """One run's hold on its conversation."""

    conversation_id: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    fork_from: str | None = None
    """Rollback: the checkpoint the new run starts from (the cancelled run's start)."""
    info: dict[str, Any] = field(default_factory=dict)

    def value(self) -> dict[str, Any]:
        return {"run": self.run_id, **self.info}

    def note(self, **info: Any) -> None:
        """Record what a rollback of this run must undo (the checkpoint it started
        from): the run undoes it itself (``hand_over``), when it is cancelled."""
        self.info.update(info)

    async def hand_over(self, turn: int | None, checkpoint_id: str | None) -> None:
        """A run cancelled by ``rollback``: forget its turn and leave the checkpoint it
        started from to the run that cancelled it ("": the thread had none)."""
        if turn:
            await sync_to_async(roll_back)(self.conversation_id, turn)
        await _set(_from_key(self.conversation_id), checkpoint_id or "", LEASE_S)

    async def release(self) -> None:
        key = _key(self.conversation_id)
        held = await _get(key)
        if isinstance(held, dict) and held.get("run") == self.run_id:
            await _delete(key)

    async def watch(self, task: asyncio.Task, cancelled: asyncio.Event) -> None:
        """Renew the lease; cancel ``task`` when a later send asks (sets ``cancelled``).
        With Redis, every run of the event loop is watched by one poll (``_Watch``)."""
        if shared_state.available():
            watching = _Watch.of_loop()
            watching.add(self, task, cancelled)
            try:
                await asyncio.wait([task])
            finally:
                watching.discard(self)
            return
        renewed = time.monotonic()
        while not task.done():
            await asyncio.sleep(POLL_S * 2)
            if self.asked(await _get(_cancel_key(self.conversation_id)), task, cancelled):
                return
            if time.monotonic() - renewed > RENEW_S:
                await _touch(_key(self.conversation_id), LEASE_S)
                renewed = time.monotonic()

    def asked(self, flag: Any, task: asyncio.Task, cancelled: asyncio.Event) -> bool:
        """Whether ``flag`` (the conversation's cancel flag) asks this run to stop: then
        ``task`` is cancelled and ``cancelled`` set."""
        if not (isinstance(flag, dict) and flag.get("run") == self.run_id):
            return False
        self.info["cancelled_by"] = flag.get("policy", DoubleTexting.INTERRUPT)
        cancelled.set()
        task.cancel()
        return True


@dataclass
class _Watched:
    lease: Lease
    task: asyncio.Task
    cancelled: asyncio.Event
    renewed: float = field(default_factory=time.monotonic)


class _Watch:
    """The runs of one event loop, watched together: every ``POLL_S * 2`` one Redis
    round trip reads all their cancel flags and renews the leases due (not one per run:
    a process streaming a few hundred turns would poll Redis thousands of times a
    second)."""

    _loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watch] = (
        weakref.WeakKeyDictionary())

    def __init__(self) -> None:
        self.runs: dict[str, _Watched] = {}
        self.poller: asyncio.Task | None = None
        self.polling = False  # its round trip is under way

    @classmethod
    def of_loop(cls) -> _Watch:
        return cls._loops.setdefault(asyncio.get_running_loop(), cls())

    def add(self, lease: Lease, task: asyncio.Task, cancelled: asyncio.Event) -> None:
        self.runs[lease.run_id] = _Watched(lease, task, cancelled)
        if self.poller is None or self.poller.done():
            self.poller = asyncio.create_task(self._poll())

    def discard(self, lease: Lease) -> None:
        self.runs.pop(lease.run_id, None)
        if not self.runs and self.poller is not None and not self.polling:
            self.poller.cancel()  # asleep: nothing left to watch (one mid-poll ends itself)
            self.poller = None

    async def _poll(self) -> None:
        while self.runs:
            await asyncio.sleep(POLL_S * 2)
            watched = [w for w in self.runs.values() if not w.task.done()]
            if not watched:
                continue
            now = time.monotonic()
            due = [w for w in watched if now - w.renewed > RENEW_S]
            self.polling = True
            try:
                flags, *_renewed = await shared_state.execute(
                    [("MGET", *(shared_state.full_key(_cancel_key(w.lease.conversation_id))
                                for w in watched)),
                     *(("EXPIRE", shared_state.full_key(_key(w.lease.conversation_id)),
                        LEASE_S) for w in due)])
            except Exception:  # Redis away: the runs go on, polled again next time
                logger.warning("could not poll the runs' cancel flags", exc_info=True)
                continue
            finally:
                self.polling = False
            for w in due:
                w.renewed = now
            for w, flag in zip(watched, flags, strict=True):
                w.lease.asked(shared_state.loads(flag), w.task, w.cancelled)


async def _get(key: str) -> Any:
    """A cache value read from the event loop (``core.shared_state``: no thread hop — every
    running turn polls its cancel flag), or through a thread when the cache is not Redis."""
    if shared_state.available():
        (value,) = await shared_state.get_many([key])
        return value
    return await _cached(cache.get)(key)


async def _add(key: str, value: Any, seconds: int) -> bool:
    """``cache.add`` from the event loop: set ``key`` unless it exists (atomic)."""
    if shared_state.available():
        (reply,) = await shared_state.execute([("SET", shared_state.full_key(key),
                                                shared_state.dumps(value), "EX", seconds,
                                                "NX")])
        return reply is not None
    return await _cached(cache.add)(key, value, seconds)


async def _set(key: str, value: Any, seconds: int) -> None:
    if shared_state.available():
        await shared_state.execute([("SET", shared_state.full_key(key),
                                     shared_state.dumps(value), "EX", seconds)])
    else:
        await _cached(cache.set)(key, value, seconds)


async def _delete(key: str) -> None:
    if shared_state.available():
        await shared_state.execute([("DEL", shared_state.full_key(key))])
    else:
        await _cached(cache.delete)(key)


async def _touch(key: str, seconds: int) -> None:
    if shared_state.available():
        await shared_state.execute([("EXPIRE", shared_state.full_key(key), seconds)])
    else:
        await _cached(cache.touch)(key, seconds)


def active_run(conversation_id: str) -> dict[str, Any] | None:
    """The active run of a conversation (``{"run", "message_id", …}``), if any."""
    held = cache.get(_key(conversation_id))
    return held if isinstance(held, dict) else None


def claim_command(lease: Lease) -> tuple:
    """The Redis command that takes ``lease`` if no run holds its conversation (``OK``,
    else nil): for a caller that pipelines it with its own reads (``claim``'s
    ``added``)."""
    return ("SET", shared_state.full_key(_key(lease.conversation_id)),
            shared_state.dumps(lease.value()), "EX", LEASE_S, "NX")


async def claim(conversation_id: str, policy: str, *, lease: Lease | None = None,
                added: bool | None = None) -> Lease:
    """The conversation's lease for a new run, after applying ``policy`` to the run
    that holds it, if any; ``RunRefused`` when the policy refuses. ``added``: whether
    ``claim_command(lease)`` already took it (None: not tried yet)."""
    lease = lease or Lease(str(conversation_id))
    key = _key(lease.conversation_id)
    if added or (added is None and await _add(key, lease.value(), LEASE_S)):
        return lease
    if policy == DoubleTexting.REJECT:
        raise RunRefused("run_active", _(
            "A run of this conversation is still active; send again when it has ended."))
    cancelled: dict[str, Any] | None = None
    if policy in (DoubleTexting.INTERRUPT, DoubleTexting.ROLLBACK):
        cancelled = await _cached(_ask_to_cancel)(lease.conversation_id, policy)
    await _wait_for(key, lease, policy)
    if policy == DoubleTexting.ROLLBACK and cancelled:
        lease.fork_from = await _cached(_pop)(_from_key(lease.conversation_id))
    return lease


def _pop(key: str) -> str | None:
    value = cache.get(key)
    cache.delete(key)
    return value


def _ask_to_cancel(conversation_id: str, policy: str) -> dict[str, Any] | None:
    held = active_run(conversation_id)
    if held is not None:
        cache.set(_cancel_key(conversation_id), {"run": held["run"], "policy": policy}, LEASE_S)
    return held


async def _wait_for(key: str, lease: Lease, policy: str) -> None:
    limit = (settings.OPENCLAW_WORKFLOW_ENQUEUE_WAIT_S if policy == DoubleTexting.ENQUEUE
             else LEASE_S)
    deadline = time.monotonic() + limit
    while not await _add(key, lease.value(), LEASE_S):
        if time.monotonic() > deadline:
            raise RunRefused("run_busy", _(
                "The conversation's active run did not end in time; try again later."), 503)
        await asyncio.sleep(POLL_S)


def roll_back(conversation_id: str, turn: int) -> None:
    """Forget a cancelled run's turn: its messages, its count, the cached window."""
    with transaction.atomic():
        deleted, _rows = Message.objects.filter(conversation_id=conversation_id,
                                                turn=turn).delete()
        if deleted:
            Conversation.objects.filter(pk=conversation_id, turns=turn).update(
                turns=F("turns") - 1)
    conversations.forget_window(conversation_id)
