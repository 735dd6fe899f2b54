"""The built-in tools through ``chat.tools.service.acall``, as an agent calls them: the
calculator's answers and refusals (nothing but arithmetic, bounded work), the current
time in a zone, an HTTP request to a real loopback server on an allowed host (and none
to a host that is not), and a search of a user's real memories (all-MiniLM-L6-v2 on
pgvector)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import pytest
from aiohttp import web
from asgiref.sync import sync_to_async

import chat.tools.builtins  # noqa: F401  (registers the built-ins: ready() will)
from chat import memory
from chat.models import Conversation, Message
from chat.tools.registry import ToolContext, get_builtin
from chat.tools.service import ToolResult, ToolSpec, acall
from chat.workflows.nodes import HTTP_MAX_BYTES

ANN = ToolContext(user="ann")


def spec(name: str) -> ToolSpec:
    """The built-in as its row describes it after ``sync_builtin_rows``."""
    builtin = get_builtin(name)
    assert builtin is not None
    return ToolSpec(name=name, kind="builtin", builtin=name, parameters=builtin.parameters,
                    timeout_s=builtin.timeout_s)


async def call(name: str, context: ToolContext = ANN, **arguments) -> ToolResult:
    return await acall(spec(name), arguments, context)


# --- calculator ------------------------------------------------------------------------


@pytest.mark.parametrize(("expression", "value"), [
    ("2 + 3 * 4", 14),
    ("(2 + 3) * 4", 20),
    ("7 // 2 + 7 % 2 - -1", 5),
    ("2 ** 10 / 4", 256.0),
    ("sqrt(16) + abs(-3) + max(1, 9, 4) - min(5, 2)", 14.0),
    ("round(pi, 3)", 3.142),
    ("log(8, 2) + log10(1000)", 6.0),
    ("cos(0) + sin(0) + e ** 0", 2.0),
    ("2 ** 1000 % 1000", 376),
])
async def test_calculator_computes_arithmetic(expression, value):
    result = await call("calculator", expression=expression)

    assert not result.is_error, result.content
    assert result.value == pytest.approx(value)
    assert result.content == json.dumps(result.value)


@pytest.mark.parametrize(("expression", "says"), [
    ("__import__('os')", "calling “__import__”"),
    ("__import__('os').system('true')", "calling “__import__('os').system”"),
    ("(1).__class__", "attribute access"),
    ("x + 1", "the name “x”"),
    ("'a' * 3", "str"),
    ("[1, 2][0]", "Subscript"),
    ("(lambda: 1)()", "calling “lambda: 1”"),
    ("1 if 2 else 3", "IfExp"),
    ("1 < 2", "Compare"),
    ("round(5, -10 ** 9)", "round's digits"),
    ("1 / 0", "division by zero"),
    ("sqrt(-1)", "math domain error"),
    ("1e308 * 10", "not a finite number"),
    ("2 +", "Not an arithmetic expression"),
])
async def test_calculator_refuses_what_is_not_arithmetic(expression, says):
    result = await call("calculator", expression=expression)

    assert result.is_error and says in result.content, result.content


@pytest.mark.parametrize("expression", ["9**9**9", "2 ** 100000", "10**3000 * 10**3000",
                                        "(10**2000)**2"])
async def test_calculator_refuses_huge_powers_at_once(expression):
    started = time.perf_counter()

    result = await call("calculator", expression=expression)

    assert result.is_error and "too large" in result.content
    assert time.perf_counter() - started < 0.5  # refused, not computed


async def test_calculator_refuses_a_very_long_expression():
    long = "+".join(["1"] * 400)  # 799 characters

    result = await call("calculator", expression=long)

    assert result.is_error and "expression" in result.content and "long" in result.content
    assert not (await call("calculator", expression="+".join(["1"] * 200))).is_error


# --- current time ----------------------------------------------------------------------


async def test_current_time_in_a_named_zone():
    result = await call("current_time", timezone="Asia/Shanghai")

    assert not result.is_error
    now = datetime.fromisoformat(result.value["datetime"])
    assert now.utcoffset() == timedelta(hours=8) and result.value["utc_offset"] == "+0800"
    assert abs(now.timestamp() - time.time()) < 5
    assert result.value["timezone"] == "Asia/Shanghai"


async def test_current_time_defaults_to_the_server_zone(settings):
    settings.TIME_ZONE = "UTC"

    result = await call("current_time")

    assert result.value["timezone"] == "UTC" and result.value["utc_offset"] == "+0000"


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "Europe"])
async def test_current_time_refuses_a_zone_that_is_not_one(zone):
    result = await call("current_time", timezone=zone)

    assert result.is_error and f"“{zone}” is not a time zone" in result.content


# --- HTTP request ----------------------------------------------------------------------


@pytest.fixture
async def http_server():
    """A real aiohttp server on loopback; ``seen`` lists the requests it got."""
    seen: list[tuple[str, str]] = []

    async def hello(request: web.Request) -> web.Response:
        seen.append((request.method, request.path))
        return web.json_response({"hello": request.query.get("name", "world")})

    async def echo(request: web.Request) -> web.Response:
        seen.append((request.method, request.path))
        return web.json_response({"got": await request.json()}, status=201)

    async def moved(request: web.Request) -> web.Response:
        seen.append((request.method, request.path))
        raise web.HTTPFound("/hello")

    async def big(request: web.Request) -> web.Response:
        seen.append((request.method, request.path))
        return web.Response(text="x" * (HTTP_MAX_BYTES * 3))

    app = web.Application()
    app.add_routes([web.get("/hello", hello), web.post("/echo", echo),
                    web.get("/moved", moved), web.get("/big", big)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", port, seen
    await runner.cleanup()


async def test_http_request_gets_and_posts_json_on_an_allowed_host(http_server, settings):
    base, _port, seen = http_server
    settings.OPENCLAW_WORKFLOW_HTTP_HOSTS = ["127.0.0.1"]

    got = await call("http_request", url=f"{base}/hello?name=ann")
    posted = await call("http_request", url=f"{base}/echo", method="POST",
                        body={"city": "Lisbon", "days": 3})

    assert got.value == {"status": 200, "body": {"hello": "ann"}}
    assert posted.value == {"status": 201, "body": {"got": {"city": "Lisbon", "days": 3}}}
    assert seen == [("GET", "/hello"), ("POST", "/echo")]


async def test_http_request_follows_no_redirect_and_caps_the_body(http_server, settings):
    base, port, seen = http_server
    settings.OPENCLAW_WORKFLOW_HTTP_HOSTS = [f"127.0.0.1:{port}"]  # host and port form

    moved = await call("http_request", url=f"{base}/moved")
    big = await call("http_request", url=f"{base}/big")

    assert moved.value["status"] == 302 and seen[:1] == [("GET", "/moved")]
    assert ("GET", "/hello") not in seen
    assert big.value["status"] == 200 and len(big.value["body"]) == HTTP_MAX_BYTES


async def test_http_request_refuses_a_host_that_is_not_allowed(http_server, settings):
    base, port, seen = http_server
    settings.OPENCLAW_WORKFLOW_HTTP_HOSTS = ["tools.internal"]

    refused = [await call("http_request", url=url) for url in (
        f"{base}/hello", f"http://localhost:{port}/hello", f"ftp://127.0.0.1:{port}/",
        f"http://user:pw@127.0.0.1:{port}/hello")]

    assert all(r.is_error and "tools.internal" in r.content for r in refused)
    assert seen == []  # nothing was sent


async def test_http_request_refuses_a_get_body_and_reports_a_dead_port(http_server,
                                                                       settings):
    base, _port, seen = http_server
    settings.OPENCLAW_WORKFLOW_HTTP_HOSTS = ["127.0.0.1"]

    with_body = await call("http_request", url=f"{base}/hello", body={"a": 1})
    dead = await call("http_request", url="http://127.0.0.1:1/nothing")

    assert with_body.is_error and "POST" in with_body.content and seen == []
    assert dead.is_error and dead.content.startswith("The request failed")


# --- memory search ---------------------------------------------------------------------

FACT = "My sister Alice lives in Lisbon and works as a marine biologist studying dolphins."
OTHERS = ["I am reading a long novel about a lighthouse keeper.",
          "Our office ordered new ergonomic chairs for everyone."]


def remember(user: str, *texts: str) -> None:
    conversation = Conversation.objects.create(user=user)
    memory.remember_messages([Message.objects.create(
        conversation=conversation, turn=i + 1, role="user", content=text).pk
        for i, text in enumerate(texts)])


@pytest.mark.django_db(transaction=True)
async def test_memory_search_finds_the_users_own_memories():
    await sync_to_async(remember)("ann", FACT, *OTHERS)
    await sync_to_async(remember)("bob", "My brother Bob works as a marine biologist too.")

    found = await call("memory_search", query="What does my sister do for a living?")
    one = await call("memory_search", query="sister lighthouse chairs", k=1)
    none = await call("memory_search", ToolContext(user="cy"), query="sister's job")

    assert not found.is_error
    assert found.value[0]["text"] == FACT and found.value[0]["score"] >= 0.35
    assert all("Bob" not in hit["text"] for hit in found.value)
    assert set(found.value[0]) >= {"id", "text", "score", "conversation_id"}
    assert len(one.value) == 1 and none.value == []


async def test_memory_search_needs_a_user_and_a_bounded_k():
    nobody = await call("memory_search", ToolContext(), query="anything")
    too_many = await call("memory_search", query="anything", k=21)

    assert nobody.is_error and "user" in nobody.content
    assert too_many.is_error and "(k)" in too_many.content
