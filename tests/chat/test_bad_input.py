"""Bad input gets a clean error and loses nothing (issue 19): the studio websocket's
``params`` are checked by the rules of ``/v1`` chat bodies (one function,
``chat.v1.validation.sampling``) and refused with an ``error`` frame naming the field;
a string that is not text (an unpaired surrogate) is refused on both surfaces; every
malformed id — a header, a path, a query string, a body field, a frame's
``message_id`` — is a clean 4xx in its surface's shape (a deadline header too short to
call anything, a 504); and a workflow HTTP tool's URL
is checked by one parser when saved and when called. Through the real consumer
(``WebsocketCommunicator``), the real ASGI application (``/v1``, in process) and the
studio's views, on the real PostgreSQL and Redis."""

from __future__ import annotations

import json
import math

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat.graph.service import arun_turn
from chat.models import Conversation, Message, Workflow
from chat.v1.validation import SAMPLING
from chat.websocket_urls import websocket_urlpatterns
from chat.workflows.nodes import tool_url
from openclaw_site.asgi import application
from routing.keys import create_key
from routing.models import ModelEndpoint

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("no_recall", "closed_saver")]
ORIGIN = (b"origin", b"http://127.0.0.1")
HELLO = [{"role": "user", "content": "hello"}]
NUL = "%00"


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", password="pw-alice-1")


@pytest.fixture
def echo(db):
    ModelEndpoint.objects.create(name="echo", engine="echo")


@pytest.fixture
def secret(db) -> str:
    return create_key("bad-input")[1]


async def connect(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/ws/chat/new/",
                                         headers=[ORIGIN])
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def answer(ws: WebsocketCommunicator, request: str | None) -> dict:
    """The last frame answering ``request``: its turn's ``done`` or ``error``, or the
    refusal (``error``), or another one-frame answer (``forked``)."""
    while True:
        frame = await ws.receive_json_from(timeout=20)
        if frame.get("id") == request and frame["type"] in ("done", "error", "forked"):
            return frame


async def stored() -> tuple[int, int]:
    return await Conversation.objects.acount(), await Message.objects.acount()


def v1() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=application),
                             base_url="http://127.0.0.1", timeout=20)


# --- websocket params ---------------------------------------------------------------


BAD_PARAMS = [
    ({"max_tokens": -1}, "params.max_tokens"),  # was a Prometheus ValueError
    ({"max_tokens": 10**30}, "params.max_tokens"),  # was a msgpack overflow
    ({"max_tokens": 0}, "params.max_tokens"),
    ({"max_tokens": 2.5}, "params.max_tokens"),
    ({"temperature": "hot"}, "params.temperature"),  # was accepted
    ({"temperature": 2.5}, "params.temperature"),
    ({"temperature": math.nan}, "params.temperature"),
    ({"top_p": -0.1}, "params.top_p"),
    ({"seed": 10**30}, "params.seed"),
    ({"seed": True}, "params.seed"),
    ({"stop": 5}, "params.stop"),
    ({"stop": ["ok", 1]}, "params.stop"),
    ({"evil": 1}, "params"),
    (["max_tokens"], "params"),
]


async def test_out_of_range_params_get_an_error_naming_the_field_and_store_nothing(
        alice, echo):
    ws = await connect(alice)

    for index, (params, field) in enumerate(BAD_PARAMS):
        await ws.send_json_to({"type": "message", "id": f"b{index}", "content": "hi",
                               "model": "echo", "params": params})
        refused = await answer(ws, f"b{index}")
        assert (refused["type"], refused["code"], refused["param"]) == (
            "error", "invalid_params", field), params
    assert await stored() == (0, 0)

    # the connection stays usable: valid params at their limits are accepted
    await ws.send_json_to({"type": "message", "id": "ok", "content": "hello", "model": "echo",
                           "params": {"max_tokens": 64, "temperature": 2, "top_p": 0,
                                      "seed": -(2**63), "stop": "zz"}})
    done = await answer(ws, "ok")
    assert done["type"] == "done" and done["content"] == "hello", done
    assert await stored() == (1, 2)
    await ws.disconnect()


@pytest.mark.parametrize("field,value", [("max_tokens", -1), ("temperature", "hot"),
                                         ("seed", 10**30), ("stop", 5)])
async def test_the_websocket_refuses_params_with_the_rule_and_words_of_v1(
        alice, echo, secret, field, value):
    async with v1() as client:
        http = await client.post("/v1/chat/completions", json={
            "model": "echo", "messages": HELLO, field: value},
            headers={"Authorization": f"Bearer {secret}"})
    ws = await connect(alice)
    await ws.send_json_to({"type": "message", "id": "p", "content": "hi", "model": "echo",
                           "params": {field: value}})
    frame = await answer(ws, "p")

    error = http.json()["error"]
    assert http.status_code == 400 and error["param"] == field
    assert frame["param"] == f"params.{field}" and frame["message"] == error["message"]
    await ws.disconnect()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from(["\ud800", "a\udfffb", "", "\x00"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=4), inner, max_size=3),
    max_leaves=6)


NEAR = st.integers(-2, 5000) | st.floats(-0.5, 2.5) | st.lists(st.text(max_size=3), max_size=2)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(params=st.dictionaries(st.sampled_from(SAMPLING), JSON | NEAR, max_size=5))
async def test_no_json_value_of_any_param_fails_inside_the_consumer(alice, echo, params):
    ws = await connect(alice)
    await ws.send_json_to({"type": "message", "id": "h", "content": "hi", "model": "echo",
                           "params": params})
    last = await answer(ws, "h")

    assert last.get("code") != "internal_error", (params, last)
    if last["type"] == "error" and last["code"] in ("invalid_params", "invalid_text"):
        assert last["param"].startswith("params")
    await ws.disconnect()


# --- text that is not text ----------------------------------------------------------


async def test_an_unpaired_surrogate_anywhere_in_a_frame_is_refused_naming_it(alice, echo):
    ws = await connect(alice)
    frames = [
        ({"content": "\ud800"}, "content"),  # was a psycopg UnicodeEncodeError
        ({"content": [{"type": "text", "text": "a\udfffb"}]}, "content[0].text"),
        ({"content": "hi", "params": {"stop": ["\ud800"]}}, "params.stop[0]"),
        ({"content": "hi", "model": "\ud800"}, "model"),
    ]
    for index, (fields, where) in enumerate(frames):
        await ws.send_json_to({"type": "message", "id": f"s{index}", "model": "echo",
                               **fields})
        refused = await answer(ws, f"s{index}")
        assert (refused["code"], refused["param"]) == ("invalid_text", where)
        assert "unpaired surrogate" in refused["message"]
    await ws.send_json_to({"type": "ping", "id": "\ud800"})
    assert (await answer(ws, None))["code"] == "invalid_id"
    assert await stored() == (0, 0)

    await ws.send_json_to({"type": "message", "id": "ok", "content": "fine", "model": "echo"})
    assert (await answer(ws, "ok"))["type"] == "done"
    await ws.disconnect()


async def test_v1_refuses_the_same_text_naming_where_it_is(echo, secret):
    async with v1() as client:
        response = await client.post("/v1/chat/completions", content=json.dumps({
            "model": "echo", "messages": [{"role": "user", "content": "\ud800"}]}),
            headers={"Authorization": f"Bearer {secret}"})  # as "\\ud800": ASCII JSON

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].content"


# --- ids ------------------------------------------------------------------------------


async def test_regenerate_and_fork_with_bad_input_change_nothing(alice, echo):
    ws = await connect(alice)
    await ws.send_json_to({"type": "message", "id": "q", "content": "first", "model": "echo"})
    assert (await answer(ws, "q"))["type"] == "done"

    await ws.send_json_to({"type": "regenerate", "id": "r", "params": {"max_tokens": -1}})
    assert (await answer(ws, "r"))["param"] == "params.max_tokens"
    for index, bad in enumerate(["abc", 10**30, -1, [], {}, True, "9" * 40, 1.5]):
        await ws.send_json_to({"type": "fork", "id": f"f{index}", "message_id": bad})
        assert (await answer(ws, f"f{index}"))["code"] == "message_not_found"

    assert await stored() == (1, 2)
    assert await Message.objects.filter(in_context=True).acount() == 2
    await ws.send_json_to({"type": "regenerate", "id": "again"})
    assert (await answer(ws, "again"))["type"] == "done"
    await ws.disconnect()


@pytest.mark.parametrize("headers,metadata,param", [
    ({"X-OpenClaw-Conversation": "new"}, None, "X-OpenClaw-Conversation"),  # was a 500
    ({"X-OpenClaw-Conversation": "{1234}"}, None, "X-OpenClaw-Conversation"),
    ({}, {"conversation_id": "new"}, "metadata.conversation_id"),
    ({}, {"conversation_id": 5}, "metadata.conversation_id"),
    ({}, {"conversation_id": "a\x00b", "resume": {"action": "approve"}},
     "metadata.conversation_id"),
])
async def test_a_conversation_id_that_is_not_a_uuid_is_a_400_naming_it(
        echo, secret, headers, metadata, param):
    body = {"model": "echo", "messages": HELLO, **({"metadata": metadata} if metadata else {})}
    async with v1() as client:
        refused = await client.post("/v1/chat/completions", json=body, headers={
            "Authorization": f"Bearer {secret}", **headers})
        fine = await client.post("/v1/chat/completions", json={
            "model": "echo", "messages": HELLO, "metadata": {"conversation_id": None}},
            headers={"Authorization": f"Bearer {secret}"})

    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == param
    assert refused.json()["error"]["code"] == "invalid_request"
    assert fine.status_code == 200 and await Conversation.objects.acount() == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_a_deadline_too_short_to_call_a_model_is_a_504_not_a_500(echo, secret, stream):
    async with v1() as client:
        answers = {value: await client.post("/v1/chat/completions", json={
            "model": "echo", "messages": HELLO, "stream": stream}, headers={
            "Authorization": f"Bearer {secret}", "x-openclaw-deadline-ms": value})
            for value in ("1e-300", "abc", "nan", "inf", "-5")}

    spent = answers.pop("1e-300")  # was a 500 (an assertion in the gateway)
    assert spent.status_code == 504 and spent.json()["error"]["code"] == "timeout"
    assert all(r.status_code == 200 for r in answers.values())  # ignored, as documented


async def test_malformed_ids_on_v1_are_4xx_in_openais_shape(echo, secret):
    long = "x" * 500
    calls = [("GET", f"/v1/responses/{NUL}"), ("DELETE", f"/v1/responses/resp_{NUL}"),
             ("GET", f"/v1/responses/{NUL}/input_items"), ("GET", f"/v1/files/{NUL}"),
             ("GET", f"/v1/files/{NUL}/content"), ("DELETE", f"/v1/files/{long}"),
             ("GET", f"/v1/batches/{NUL}"), ("POST", f"/v1/batches/{NUL}/cancel"),
             ("GET", f"/v1/batches?after={NUL}"), ("GET", f"/v1/models/{NUL}")]
    bodies = [("/v1/batches", {"input_file_id": "file-\x00", "endpoint": "/v1/chat/completions",
                               "completion_window": "24h"}),
              ("/v1/responses", {"model": "echo", "input": "hi",
                                 "previous_response_id": "resp_\x00"}),
              ("/v1/chat/completions", {"model": "workflow/a\x00", "messages": HELLO})]
    async with v1() as client:
        auth = {"Authorization": f"Bearer {secret}"}
        answers = [await client.request(method, url, headers=auth) for method, url in calls]
        answers += [await client.post(url, json=body, headers=auth) for url, body in bodies]

    for response in answers:
        assert 400 <= response.status_code < 500, (response.request.url, response.text)
        assert isinstance(response.json()["error"]["message"], str)


def test_malformed_ids_and_queries_in_the_studio_are_4xx(db):
    staff = get_user_model().objects.create_superuser("root", password="pw-root-1")
    client = Client(raise_request_exception=False)
    client.force_login(staff)

    answers = {
        "?q=NUL": client.get(f"/studio/api/conversations/?q={NUL}"),
        "conversation=new": client.get("/studio/api/annotations/?conversation=new"),
        "conversation=NUL": client.get(f"/studio/api/annotations/?conversation={NUL}"),
        "tag=NUL": client.get(f"/studio/api/annotations/?tag={NUL}"),
        "since=2020-13-45": client.get("/studio/api/annotations/?since=2020-13-45T00:00"),
        "batch NUL": client.post(f"/studio/api/jobs/batch/{NUL}/cancel/"),
        "title": client.post("/studio/api/conversations/00000000-0000-0000-0000-000000000000/",
                             '{"title": "\\ud800"}', content_type="application/json"),
    }

    for name, response in answers.items():
        assert 400 <= response.status_code < 500, (name, response.content)
        assert response.json()["error"]["message"], name


# --- the HTTP tool's URL --------------------------------------------------------------


def tool_flow(url: str) -> Workflow:
    return Workflow(slug="tooled", name="tooled", definition={
        "entry": "fetch", "nodes": [
            {"id": "fetch", "type": "http_tool", "config": {"url": url}},
            {"id": "answer", "type": "llm", "config": {"model": "echo"}}],
        "edges": [{"source": "fetch", "target": "answer"}]})


@pytest.mark.parametrize("url", [
    "http://evil.example\\@tools.internal/x",  # was saved; read as evil.example when called
    "http://tools.internal\\x/",
    "http://user:pw@tools.internal/",
    "http://evil.example%5C@tools.internal/",
    "http://tools.internal:99999/", "http://tools.internal:abc/",
    "ftp://tools.internal/", "//tools.internal/x", "http:tools.internal",
    "http://tools.internal /x", "http://tools.internal\t/", "http://tools.internal./",
])
def test_an_http_tool_url_refused_when_called_is_refused_when_saved(db, settings, url):
    settings.OPENCLAW_WORKFLOW_HTTP_HOSTS = ["tools.internal"]

    with pytest.raises(ValidationError) as caught:
        tool_flow(url).full_clean()

    assert "“url”" in str(caught.value)
    assert tool_url(url) is None  # what the node checks before each call


def test_an_allowed_http_tool_url_is_saved(db, settings):
    settings.OPENCLAW_WORKFLOW_HTTP_HOSTS = ["tools.internal", "api.internal:8443"]

    for url in ("http://tools.internal/x?y=1", "https://api.internal:8443/v1"):
        tool_flow(url).full_clean()
        assert str(tool_url(url)) == url


async def test_a_url_saved_before_the_check_is_refused_when_called(echo, settings):
    # given a workflow row written without the save-time check (an older version's)
    settings.OPENCLAW_WORKFLOW_HTTP_HOSTS = ["tools.internal"]
    await sync_to_async(tool_flow("http://evil.example\\@tools.internal/x").save)()

    outcome = await arun_turn(conversation_id=None, user="kit", content="go", model="echo",
                              workflow="tooled")

    assert (outcome["code"], outcome["status"]) == ("tool_not_allowed", 403)
