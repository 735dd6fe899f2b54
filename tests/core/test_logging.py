"""JSON log lines carry the request id, conversation id and key prefix; the
middleware sets the request id (the client's when sane) and sends it back."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from core.logging import (
    REQUEST_ID_HEADER,
    ContextFilter,
    JsonFormatter,
    RequestContextMiddleware,
    bind,
    current,
    log_context,
    request_id,
    unbind,
)


@pytest.fixture
def captured():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("tests.logging")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


def test_lines_are_json_with_the_bound_context(captured):
    logger, lines = captured

    with log_context(request_id="req-1", conversation_id="conv-9", key_prefix="oc_abc"):
        logger.info("routed %s", "echo", extra={"model": "echo"})
    logger.warning("outside")

    inside, outside = lines()
    assert inside["message"] == "routed echo" and inside["level"] == "INFO"
    assert (inside["request_id"], inside["conversation_id"], inside["key_prefix"]) == (
        "req-1", "conv-9", "oc_abc")
    assert inside["model"] == "echo" and inside["logger"] == "tests.logging"
    assert "time" in inside and "process" in inside
    assert "request_id" not in outside


def test_exceptions_are_one_json_line(captured):
    logger, lines = captured

    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")

    [line] = lines()
    assert "ValueError: boom" in line["exc_info"]


def test_context_follows_asyncio_tasks_and_unbinds():
    async def child() -> str:
        return request_id.get()

    async def main() -> tuple[str, str]:
        tokens = bind(request_id="outer")
        seen = await asyncio.create_task(child())
        unbind(tokens)
        return seen, request_id.get()

    assert asyncio.run(main()) == ("outer", "")
    with pytest.raises(TypeError):
        bind(user="nope")


def test_middleware_sets_and_echoes_the_request_id():
    seen = []

    def view(request):
        seen.append(current())
        return HttpResponse("ok")

    middleware = RequestContextMiddleware(view)
    factory = RequestFactory()

    given = middleware(factory.get("/", HTTP_X_REQUEST_ID="client-id-42"))
    made = middleware(factory.get("/", HTTP_X_REQUEST_ID="bad id with spaces"))

    assert given[REQUEST_ID_HEADER] == "client-id-42"
    assert seen[0] == {"request_id": "client-id-42"}
    assert seen[1] == {"request_id": made[REQUEST_ID_HEADER]}
    assert len(made[REQUEST_ID_HEADER]) == 32 and made[REQUEST_ID_HEADER] != "bad id"
    assert request_id.get() == ""


def test_middleware_is_async_for_async_views():
    async def view(request):
        return HttpResponse(request_id.get())

    middleware = RequestContextMiddleware(view)
    response = asyncio.run(middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID="a-1")))

    assert asyncio.iscoroutinefunction(middleware) or middleware.is_async
    assert response.content == b"a-1" and response[REQUEST_ID_HEADER] == "a-1"
