"""The caller's side of a local engine: :class:`WorkerEngine` runs the request on
a Celery worker (queue ``gpu`` or ``cpu``) and yields the deltas as the worker
sends them over the channel layer (``inference.protocol``).

Failures the caller can see, each marking the endpoint unhealthy: no worker
takes the task in time, the engine raises or hangs past its timeouts, or the
worker process dies (its heartbeats stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict

from asgiref.sync import sync_to_async
from celery import current_app
from channels.layers import get_channel_layer
from django.utils import translation
from django.utils.translation import gettext as _

from .engines.base import ChatRequest, Delta, EndpointConfig, Engine
from .errors import ConnectionFailed, EngineError, EngineTimeout
from .protocol import HEARTBEAT_S, delta_from_message, error_from_message, request_to_dict

logger = logging.getLogger(__name__)

LIVENESS_S = 4 * HEARTBEAT_S  # silence this long from a started worker means it is gone
GENERATE_TASK = "inference.generate"  # inference.tasks.generate, which calls this module's peer

# Told of each worker call's outcome: (endpoint id, ok, detail). The registry's owner
# (``routing``) adds its health bookkeeping here in ``RoutingConfig.ready()``.
HealthListener = Callable[[int, bool, str], None]
health_listeners: list[HealthListener] = []


def engine_queue(gpu_id: int | None) -> str:
    return "gpu" if gpu_id is not None else "cpu"


class WorkerEngine(Engine):
    """Proxy for an engine registered with ``runs_in="worker"``."""

    runs_in = "caller"

    def __init__(self, config: EndpointConfig) -> None:
        super().__init__(config)
        self._controls: dict[str, str] = {}  # request id -> worker's control channel
        self.last_produced_at: float | None = None  # worker clock of the latest delta

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        request.request_id = request.request_id or uuid.uuid4().hex
        layer = get_channel_layer()
        reply = await layer.new_channel("oc.gen.")
        await self._dispatch(request, reply)
        finished = False
        try:
            async for delta in self._receive(layer, reply, request.request_id):
                finished = delta.finish_reason is not None
                yield delta
        except EngineError as exc:
            await self._mark(False, f"{exc.code}: {exc.message}")
            raise
        finally:
            if not finished:  # abandoned, timed out or failed: stop the worker's work
                await self.cancel(request.request_id)
            self._controls.pop(request.request_id, None)
        await self._mark(True, "")

    async def _dispatch(self, request: ChatRequest, reply: str) -> None:
        config = {k: v for k, v in asdict(self.config).items() if k != "api_key"}
        await asyncio.to_thread(
            current_app.send_task, GENERATE_TASK,
            kwargs={"config": config, "request": request_to_dict(request),
                    "reply_channel": reply, "language": translation.get_language()},
            queue=engine_queue(self.config.gpu_id), expires=self.config.first_byte_timeout,
        )

    async def _receive(self, layer, reply: str, request_id: str) -> AsyncIterator[Delta]:
        started = time.monotonic()
        total_deadline = started + self.config.total_timeout
        first_deadline = started + self.config.first_byte_timeout
        accepted = got_token = False
        while True:
            now = time.monotonic()
            deadline = min(total_deadline, first_deadline if not got_token else total_deadline)
            wait = deadline - now
            if accepted:
                wait = min(wait, LIVENESS_S)
            message = await self._next(layer, reply, wait, accepted, got_token, deadline)
            kind = message["type"]
            if kind == "gen.accepted":
                accepted = True
                self._controls[request_id] = message["control"]
            elif kind == "gen.loaded":
                first_deadline = time.monotonic() + self.config.first_byte_timeout
            elif kind == "gen.error":
                raise error_from_message(message)
            elif kind == "gen.delta":
                got_token = True
                self.last_produced_at = message.get("at")
                delta = delta_from_message(message)
                yield delta
                if delta.finish_reason is not None:
                    return

    async def _next(self, layer, reply: str, wait: float, accepted: bool, got_token: bool,
                    deadline: float) -> dict:
        try:
            return await asyncio.wait_for(layer.receive(reply), timeout=max(wait, 0.001))
        except TimeoutError:
            pass
        if time.monotonic() >= deadline - 0.001:
            phase = "total" if got_token else "first_byte"
            if accepted:
                message = _("%(model)s: the worker timed out (%(phase)s)")
            else:
                message = _("%(model)s: timed out (%(phase)s); no worker took the request")
            raise EngineTimeout(message % {"model": self.config.name, "phase": phase},
                                phase=phase) from None
        raise ConnectionFailed(_("%(model)s: the worker stopped answering (no heartbeat for "
                                 "%(seconds).0f s; did it die?)")
                               % {"model": self.config.name, "seconds": LIVENESS_S})

    async def cancel(self, request_id: str) -> None:
        control = self._controls.get(request_id)
        if control:
            with contextlib.suppress(Exception):  # best effort: the worker may be gone
                await get_channel_layer().send(control, {"type": "gen.cancel"})

    async def _mark(self, ok: bool, detail: str) -> None:
        endpoint_id = self.config.id
        if endpoint_id is None or not health_listeners:
            return

        def tell() -> None:
            for listener in health_listeners:
                listener(endpoint_id, ok, detail)

        await sync_to_async(tell)()
