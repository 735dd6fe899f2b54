"""Worker-side services: run one generation for a caller, keep the pool in step
with the registry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterable

from channels.layers import get_channel_layer
from django.utils import translation
from django.utils.translation import gettext as _

from .engines.base import ChatRequest, EndpointConfig
from .errors import EngineError, EngineTimeout
from .pool import get_pool
from .protocol import HEARTBEAT_S, delta_message, error_message, request_from_dict
from .registry import engine_class
from .remote import engine_queue

logger = logging.getLogger(__name__)


def run_generation(config: dict, request: dict, reply_channel: str,
                   language: str | None = None) -> None:
    """Generate for a caller waiting on ``reply_channel`` (called by the Celery task),
    its errors in the caller's ``language`` (None: the default)."""
    get_pool().run(_generate(EndpointConfig(**config), request_from_dict(request),
                             reply_channel, language))


async def _generate(config: EndpointConfig, request: ChatRequest, reply: str,
                    language: str | None = None) -> None:
    # On the pool's loop, in a task of its own: the language holds for this request only.
    with translation.override(language) if language else contextlib.nullcontext():
        await _generate_in_language(config, request, reply)


async def _generate_in_language(config: EndpointConfig, request: ChatRequest,
                                reply: str) -> None:
    layer = get_channel_layer()
    control = await layer.new_channel("oc.ctl.")
    await layer.send(reply, {"type": "gen.accepted", "worker": socket.gethostname(),
                             "pid": os.getpid(), "control": control})
    heartbeat = asyncio.create_task(_heartbeat(layer, reply))
    try:
        async with asyncio.timeout(config.total_timeout):
            await _stream(config, request, layer, reply, control)
    except TimeoutError:
        await layer.send(reply, error_message(EngineTimeout(
            _("%(model)s: generation exceeded %(seconds).0f s")
            % {"model": config.name, "seconds": config.total_timeout}, phase="total")))
    except EngineError as exc:
        await layer.send(reply, error_message(exc))
    except Exception as exc:  # an engine bug: the caller gets an error, the worker lives on
        logger.exception("engine %s failed", config.name)
        await layer.send(reply, error_message(EngineError(f"{config.name}: {exc}")))
    finally:
        heartbeat.cancel()


async def _stream(config: EndpointConfig, request: ChatRequest, layer, reply: str,
                  control: str) -> None:
    async def loaded() -> None:
        await layer.send(reply, {"type": "gen.loaded"})

    async with get_pool().use(config, on_loaded=loaded) as engine:
        watcher = asyncio.create_task(_watch_cancel(layer, control, engine,
                                                    request.request_id))
        try:
            async for delta in engine.stream(request):
                await layer.send(reply, delta_message(delta))
        finally:
            watcher.cancel()


async def _heartbeat(layer, reply: str) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        await layer.send(reply, {"type": "gen.heartbeat"})


async def _watch_cancel(layer, control: str, engine, request_id: str) -> None:
    message = await layer.receive(control)
    if message.get("type") == "gen.cancel":
        await engine.cancel(request_id)


def reconcile_pool(endpoints: Iterable[tuple[EndpointConfig, bool]], queues: set[str]) -> None:
    """Keep this worker's engine pool in step with the registry's enabled endpoints
    (``(config, warm)``, read by the registry's owner): unload what was disabled or
    edited, warm what should be warm — of the endpoints this worker's queues serve."""
    wanted, warm = {}, set()
    for config, keep_warm in endpoints:
        with contextlib.suppress(EngineError):
            if engine_class(config.engine).runs_in != "worker":
                continue
            if engine_queue(config.gpu_id) not in queues:
                continue
            wanted[config.id] = config
            if keep_warm:
                warm.add(config.id)
    get_pool().run(get_pool().reconcile(wanted, warm))
