"""JSON log lines with the request's context, ready for Filebeat.

Every record gets ``request_id``, ``conversation_id`` and ``key_prefix`` from
context variables, so a line logged anywhere while a request (or a Celery task)
runs names it. ``RequestContextMiddleware`` sets the request id (the client's
``X-Request-ID`` when it sends a sane one, else a new one) and echoes it back;
views bind the rest with ``bind(key_prefix=..., conversation_id=...)``.
Context variables follow asyncio tasks and ``sync_to_async`` hops.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
conversation_id: contextvars.ContextVar[str] = contextvars.ContextVar("conversation_id",
                                                                      default="")
key_prefix: contextvars.ContextVar[str] = contextvars.ContextVar("key_prefix", default="")
_VARS = {"request_id": request_id, "conversation_id": conversation_id,
         "key_prefix": key_prefix}

REQUEST_ID_HEADER = "X-Request-ID"
SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_id_from(header: str | None) -> str:
    """The id of an incoming request: the client's ``X-Request-ID`` when it is sane (up
    to 64 of ``A-Za-z0-9._:-``), else a new one. The middleware and the ``/v1`` fast
    path (``chat.v1.asgi``) both take it from here."""
    return header if header and SANE_ID.match(header) else uuid.uuid4().hex


def bind(**values: str) -> dict[str, contextvars.Token]:
    """Set context fields (``request_id``, ``conversation_id``, ``key_prefix``) for the
    rest of the current context; returns the tokens ``unbind`` takes."""
    unknown = set(values) - set(_VARS)
    if unknown:
        raise TypeError(f"unknown log context field(s): {', '.join(sorted(unknown))}")
    return {name: _VARS[name].set(str(value)) for name, value in values.items()}


def unbind(tokens: dict[str, contextvars.Token]) -> None:
    for name, token in tokens.items():
        _VARS[name].reset(token)


@contextmanager
def log_context(**values: str) -> Iterator[None]:
    """``with log_context(request_id=..., key_prefix=...):`` — bound inside only."""
    tokens = bind(**values)
    try:
        yield
    finally:
        unbind(tokens)


def current() -> dict[str, str]:
    """The context fields that are set now."""
    return {name: var.get() for name, var in _VARS.items() if var.get()}


class ContextFilter(logging.Filter):
    """Adds the context fields to every record (empty strings when unset)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _VARS.items():
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


class DemoteToDebug(logging.Filter):
    """Logs the INFO records ``routine`` picks at DEBUG instead: kept when the logger is
    set to DEBUG, dropped otherwise. For lines that repeat every few seconds and say
    only that all is well (a scheduler's ticks); other levels pass untouched, so a
    warning or an error of the same work is never hidden. Attach it to the logger that
    makes the records (a logger's filters do not see its children's records)."""

    def __init__(self, routine: Callable[[logging.LogRecord], bool]):
        super().__init__()
        self.routine = routine

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not self.routine(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``,
    ``process``, the context fields when set, ``exc_info`` and any ``extra=``."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("timestamp", "time")
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        super().__init__("%(levelname)s %(name)s %(message)s %(process)d", *args, **kwargs)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        for name, var in _VARS.items():
            value = getattr(record, name, None) or var.get()
            if value:
                log_data[name] = value
            else:
                log_data.pop(name, None)


class RequestContextMiddleware:
    """Binds a request id for the request's log lines and sends it back as
    ``X-Request-ID``. Sync and async capable, so it costs async views no thread hop."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[..., Any]):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self._acall(request)
        tokens = bind(request_id=self._request_id(request))
        try:
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id.get()
            return response
        finally:
            unbind(tokens)

    async def _acall(self, request: Any) -> Awaitable[Any]:
        tokens = bind(request_id=self._request_id(request))
        try:
            response = await self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id.get()
            return response
        finally:
            unbind(tokens)

    @staticmethod
    def _request_id(request: Any) -> str:
        return request_id_from(request.headers.get(REQUEST_ID_HEADER))
