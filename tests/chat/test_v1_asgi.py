"""The ``/v1`` fast path keeps Django's protections: the Host header checked against
``ALLOWED_HOSTS``, a body size limit, the HTTPS redirect and HSTS of production, and
the request id of the middleware — each refusal in OpenAI's error shape. Through the
real router (``chat.v1.asgi.V1Router``) in this process, and the Host check also through
the live web server."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from django.test import override_settings

from chat.v1.asgi import V1Router


async def not_django(scope, receive, send):
    raise AssertionError("a hot /v1 route went to Django")


async def call(path: str = "/v1/models", *, method: str = "GET", headers=(),
               chunks: tuple[bytes, ...] = (b"",), scheme: str = "http",
               query: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request through the router: (status, headers, body)."""
    scope = {"type": "http", "method": method, "path": path, "scheme": scheme,
             "query_string": query, "client": ("127.0.0.1", 5000),
             "headers": [(k.lower().encode(), v.encode())
                         for k, v in [("host", "localhost"), *headers]]}
    messages = [{"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
                for i, chunk in enumerate(chunks)]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await V1Router(not_django)(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body


def error_code(body: bytes) -> str:
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error["code"]


async def test_a_host_outside_allowed_hosts_is_refused_in_openai_shape():
    status, _headers, body = await call(headers=[("host", "evil.example")])

    assert status == 400 and error_code(body) == "invalid_host"


@override_settings(OPENCLAW_MAX_REQUEST_BYTES=1000)
async def test_a_declared_body_over_the_limit_is_refused_with_413_unread():
    status, headers, body = await call(
        "/v1/chat/completions", method="POST",
        headers=[("content-length", "5000"), ("content-type", "application/json")],
        chunks=(b"x" * 5000,))

    assert status == 413 and error_code(body) == "request_too_large"
    assert headers["connection"] == "close"


@override_settings(OPENCLAW_MAX_REQUEST_BYTES=1000)
async def test_a_streamed_body_is_cut_off_at_the_limit_with_413():
    status, _headers, body = await call(
        "/v1/chat/completions", method="POST", chunks=(b"x" * 600, b"x" * 600, b"x" * 600))

    assert status == 413 and error_code(body) == "request_too_large"


@override_settings(SECURE_SSL_REDIRECT=True)
async def test_plain_http_is_redirected_to_https_when_production_asks():
    status, headers, _body = await call(query=b"limit=5")

    assert status == 301 and headers["location"] == "https://localhost/v1/models?limit=5"


@override_settings(SECURE_SSL_REDIRECT=True, SECURE_HSTS_SECONDS=300,
                   SECURE_HSTS_INCLUDE_SUBDOMAINS=True,
                   SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
async def test_https_behind_a_tls_proxy_is_served_with_hsts_and_the_security_headers():
    status, headers, body = await call(headers=[("x-forwarded-proto", "https")])

    assert status == 401 and error_code(body) == "missing_api_key"  # served, not redirected
    assert headers["strict-transport-security"] == "max-age=300; includeSubDomains"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"


async def test_the_request_id_is_the_clients_when_sane_else_a_new_one():
    _status, given, _body = await call(headers=[("x-request-id", "trace-42.a:b")])
    _status, replaced, _body = await call(headers=[("x-request-id", "not sane!")])

    assert given["x-request-id"] == "trace-42.a:b"
    assert re.fullmatch(r"[0-9a-f]{32}", replaced["x-request-id"])


@pytest.mark.django_db(transaction=True)
def test_the_live_server_refuses_a_foreign_host_before_reading_the_key(live_server_url):
    refused = httpx.get(f"{live_server_url}/v1/models", headers={"Host": "evil.example"})
    served = httpx.get(f"{live_server_url}/v1/models")

    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_host"
    assert served.status_code == 401  # the allowed host gets as far as the key check
