"""The engine pool of a worker process: one asyncio loop in its own thread
runs every engine the worker serves.

- An endpoint's engine is built and loaded on first use, or at worker start
  when the endpoint is marked warm.
- An edited endpoint (its fingerprint changed) gets a new engine on the next
  request; the old one finishes its in-flight requests, then is closed.
- A reconcile pass every few seconds unloads engines of endpoints that were
  disabled, deleted or changed, and loads warm ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any

from core import metrics

from .engines.base import EndpointConfig, Engine
from .registry import build_local_engine

logger = logging.getLogger(__name__)


def fingerprint(config: EndpointConfig) -> str:
    """What, when changed, needs a new engine (the API key and name do not)."""
    data = asdict(config)
    for key in ("api_key", "name", "connect_timeout", "first_byte_timeout", "total_timeout"):
        data.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class _Slot:
    engine: Engine
    fingerprint: str
    inflight: int = 0
    retired: bool = False
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None


class EnginePool:
    def __init__(self) -> None:
        # By endpoint id; None for an endpoint not saved yet.
        self._slots: dict[int | None, _Slot] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_lock = threading.Lock()

    # --- the loop -------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._thread_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="engine-pool",
                                 daemon=True).start()
                self._loop = loop
        return self._loop

    def run(self, coro: Coroutine) -> Any:
        """Run ``coro`` on the pool's loop from a worker thread; block until done."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    # --- engines -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def use(self, config: EndpointConfig, on_loaded=None) -> AsyncIterator[Engine]:
        """The loaded engine for ``config``, held for the duration of the block."""
        slot = await self._slot(config, on_loaded)
        slot.inflight += 1
        try:
            with metrics.worker_generation(config.name):
                yield slot.engine
        finally:
            slot.inflight -= 1
            if slot.retired and slot.inflight == 0:
                await self._close(slot)

    async def _slot(self, config: EndpointConfig, on_loaded) -> _Slot:
        current = fingerprint(config)
        slot = self._slots.get(config.id)
        if slot is None or slot.fingerprint != current or slot.error is not None:
            if slot is not None:
                self._retire(config.id)
            slot = _Slot(build_local_engine(config), current)
            self._slots[config.id] = slot
            asyncio.get_running_loop().create_task(self._load(config, slot))
        if not slot.loaded.is_set():
            await slot.loaded.wait()
            if on_loaded is not None and slot.error is None:
                await on_loaded()
        if slot.error is not None:
            raise slot.error
        return slot

    async def _load(self, config: EndpointConfig, slot: _Slot) -> None:
        started = time.perf_counter()
        try:
            await slot.engine.load()
            metrics.observe_engine_load(config.name, config.engine, time.perf_counter() - started)
            logger.info("loaded %s engine for %s (%s)", config.engine, config.name,
                        config.path or config.url)
        except BaseException as exc:  # reported to every waiter, retried on next use
            slot.error = exc
            logger.warning("loading %s failed: %s", config.name, exc)
        finally:
            slot.loaded.set()

    def _retire(self, endpoint_id: int | None) -> None:
        slot = self._slots.pop(endpoint_id, None)
        if slot is None:
            return
        slot.retired = True
        if slot.inflight == 0:
            asyncio.get_running_loop().create_task(self._close(slot))

    async def _close(self, slot: _Slot) -> None:
        with contextlib.suppress(Exception):
            await slot.engine.aclose()

    async def reconcile(self, wanted: dict[int | None, EndpointConfig],
                        warm: set[int | None]) -> None:
        """Unload engines no longer wanted or changed; load warm ones not loaded yet."""
        for endpoint_id, slot in list(self._slots.items()):
            config = wanted.get(endpoint_id)
            if config is None or fingerprint(config) != slot.fingerprint:
                self._retire(endpoint_id)
        for endpoint_id in warm:
            if endpoint_id not in self._slots:
                with contextlib.suppress(Exception):  # logged by _load
                    await self._slot(wanted[endpoint_id], None)

    def loaded(self) -> dict[int | None, str]:
        """Endpoint id -> engine kind, for the engines currently loaded."""
        return {eid: s.engine.kind for eid, s in self._slots.items()
                if s.loaded.is_set() and s.error is None}


_pool: EnginePool | None = None
_pool_lock = threading.Lock()


def get_pool() -> EnginePool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = EnginePool()
        return _pool
