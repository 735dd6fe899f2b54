"""One admission on every surface: limits (rpm, tpm, budget) × scopes (model, workflow)
× networks (allowed, refused, behind a trusted proxy with X-Forwarded-For) × surfaces
(``/v1`` chat, Responses, Messages, legacy completions, embeddings, the studio
websocket — a plain turn and a workflow turn —, a batch line, a workflow run, a
workflow called as a tool over ``/mcp``), through
the real web server (which trusts 127.0.0.1 as a proxy), the loopback OpenAI server as
the backend, the test database and Redis. Plus bursts: 20 requests at once on an rpm-5
key get exactly 5 answers, on ``/v1`` and on the websocket.

A new surface joins the matrix by adding ONE entry to ``SURFACES``: an adapter that
sends one request with a key and says whether it was answered, with the status and
code of a refusal.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import websockets

from chat.models import Workflow
from jobs import batch
from jobs.models import BatchFile, BatchJob, BatchLine, BatchStatus, FilePurpose, LineStatus
from routing.key_models import ApiKey
from routing.keys import create_key
from routing.limits import key_limits, read, record_usage
from routing.models import ModelEndpoint
from tests.chat.conftest import live_server_url  # noqa: F401  (the fixture, shared)

pytestmark = pytest.mark.django_db(transaction=True)

MODEL, OTHER, FLOW = "acc-model", "acc-other", "acc-flow"
CLIENT = "10.1.2.3"  # the client a trusted proxy (127.0.0.1) forwards for


@pytest.fixture(scope="module", autouse=True)
def server_env() -> Iterator[None]:
    """The server this module starts trusts 127.0.0.1 as a reverse proxy, and recalls no
    long-term memory (set before ``live_server_url`` starts it)."""
    wanted = {"OPENCLAW_TRUSTED_PROXIES": "127.0.0.1/32", "OPENCLAW_MEMORY_TOP_K": "0"}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def registry(live_server_url, openai_server, monkeypatch):  # noqa: F811
    for name in (MODEL, OTHER):
        ModelEndpoint.objects.create(name=name, engine="openai", upstream_model="echo",
                                     endpoint_url=openai_server.url)
    nodes = [{"id": "recall", "type": "memory_recall", "config": {"long_term": False}},
             {"id": "answer", "type": "llm"}]
    Workflow.objects.create(slug=FLOW, name=FLOW, default_model=MODEL, definition={
        "nodes": nodes, "edges": [{"source": "recall", "target": "answer"}]})
    # a batch line gives up on a spent rpm/tpm window at once (it would wait it out)
    monkeypatch.setattr(batch, "KEY_LIMIT_PATIENCE_S", 0)
    return live_server_url


# --- the surfaces ---------------------------------------------------------------------------


@dataclass
class Outcome:
    answered: bool
    status: int
    code: str | None = None  # None: the wire format carries no code (Anthropic's)


@dataclass
class Request:
    """One request of a case: the model it picks (``own``: the surface's usual one — the
    workflow's own on a workflow surface) and the proxy's X-Forwarded-For."""

    url: str
    secret: str
    picks: str | None = None
    forwarded_for: str | None = None

    def headers(self, **more: str) -> dict[str, str]:
        found = {"Authorization": f"Bearer {self.secret}", **more}
        if self.forwarded_for:
            found["X-Forwarded-For"] = self.forwarded_for
        return found


def _http(request: Request, path: str, body: dict[str, Any]) -> Outcome:
    response = httpx.post(request.url + path, json=body, headers=request.headers(),
                          timeout=30)
    if response.status_code == 200:
        return Outcome(True, 200)
    error = response.json().get("error") or {}
    return Outcome(False, response.status_code, error.get("code"))


HELLO = [{"role": "user", "content": "hello there"}]


def chat(request: Request) -> Outcome:
    return _http(request, "/v1/chat/completions",
                 {"model": request.picks or MODEL, "messages": HELLO})


def responses(request: Request) -> Outcome:
    return _http(request, "/v1/responses", {"model": request.picks or MODEL,
                                            "input": "hello there"})


def legacy(request: Request) -> Outcome:
    return _http(request, "/v1/completions", {"model": request.picks or MODEL,
                                              "prompt": "hello there"})


def embeddings(request: Request) -> Outcome:
    return _http(request, "/v1/embeddings", {"model": request.picks or MODEL,
                                             "input": "hello there"})


def messages(request: Request) -> Outcome:
    """Anthropic's Messages: its error shape has a type, not OpenAI's code."""
    response = httpx.post(request.url + "/v1/messages", timeout=30,
                          headers=request.headers(**{"anthropic-version": "2023-06-01"}),
                          json={"model": request.picks or MODEL, "max_tokens": 16,
                                "messages": HELLO})
    return Outcome(response.status_code == 200, response.status_code)


def workflow_run(request: Request) -> Outcome:
    """``workflow/<slug>`` on ``/v1``; a pick is ``metadata.model``."""
    body: dict[str, Any] = {"model": f"workflow/{FLOW}", "messages": HELLO}
    if request.picks:
        body["metadata"] = {"model": request.picks}
    return _http(request, "/v1/chat/completions", body)


async def _turn(request: Request, frame: dict[str, Any]) -> Outcome:
    url = request.url.replace("http://", "ws://") + "/ws/chat/new/"
    async with websockets.connect(url, additional_headers=request.headers(),
                                  origin=request.url, open_timeout=10) as ws:
        try:
            await ws.send(json.dumps({"type": "message", "id": "t", "content": "hello there",
                                      **frame}))
        except websockets.ConnectionClosed:
            pass  # refused on connecting: its error frame is waiting to be read
        async with asyncio.timeout(30):
            while True:
                got = json.loads(await ws.recv())
                if got.get("id") == "t" and got["type"] == "done":
                    return Outcome(True, 200)
                if got["type"] == "error":
                    return Outcome(False, got.get("status", 500), got["code"])


def websocket(request: Request) -> Outcome:
    return asyncio.run(_turn(request, {"model": request.picks or MODEL}))


def websocket_workflow(request: Request) -> Outcome:
    """A studio turn through a workflow: the frame names the workflow and a model (its
    own unless the case picks another)."""
    return asyncio.run(_turn(request, {"model": request.picks or MODEL, "workflow": FLOW}))


def batch_line(request: Request) -> Outcome:
    """One line of the key's batch, run in this process (no client address: its network
    was checked when the batch was created)."""
    key = ApiKey.objects.get(prefix=request.secret.split(".", 1)[0])
    source = BatchFile.objects.create(purpose=FilePurpose.BATCH, filename="in.jsonl",
                                      owner=key.family)
    job = BatchJob.objects.create(input_file=source, api_key=key, owner=key.family,
                                  status=BatchStatus.IN_PROGRESS, total=1)
    line = BatchLine.objects.create(job=job, line=1, chunk=0, custom_id="one", body={
        "model": request.picks or MODEL, "messages": HELLO})
    batch.run_chunk(job.pk, 0)
    line.refresh_from_db()
    if line.status == LineStatus.SUCCEEDED:
        return Outcome(True, 200)
    return Outcome(False, line.status_code or 0, line.response["error"]["code"])


def mcp(request: Request) -> Outcome:
    """``/mcp``: a JSON-RPC ``tools/call`` of the workflow's tool; a pick is its ``model``."""
    arguments: dict[str, Any] = {"message": "hello there"}
    if request.picks:
        arguments["model"] = request.picks
    response = httpx.post(request.url + "/mcp", timeout=30, headers=request.headers(
        Accept="application/json, text/event-stream"), json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": f"workflow_{FLOW}", "arguments": arguments}})
    if response.status_code == 200:
        return Outcome(not response.json()["result"]["isError"], 200)
    error = response.json().get("error") or {}
    return Outcome(False, response.status_code, error.get("code"))


@dataclass
class Surface:
    send: Callable[[Request], Outcome]
    runs_workflow: bool = False  # the workflow's own model needs no scope of its own
    has_network: bool = True  # a client address to check against the key's networks


SURFACES = {
    "v1-chat": Surface(chat),
    "v1-responses": Surface(responses),
    "v1-messages": Surface(messages),
    "v1-completions": Surface(legacy),
    "v1-embeddings": Surface(embeddings),
    "websocket": Surface(websocket),
    "websocket-workflow": Surface(websocket_workflow, runs_workflow=True),
    "batch-line": Surface(batch_line, has_network=False),
    "workflow-run": Surface(workflow_run, runs_workflow=True),
    "mcp": Surface(mcp, runs_workflow=True),
}


def clear_of_the_minute_edge(margin: float = 6.0) -> None:
    """Wait for the next minute when this one ends within ``margin`` seconds: a case's
    requests then count in one per-minute window."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.05)


# --- the cases ------------------------------------------------------------------------------

OK = (200, None)


@dataclass
class Case:
    key: dict[str, Any]  # the key's fields
    expect: list[tuple[int, str | None]]  # each request's status and code, in order
    picks: str | None = None
    forwarded_for: str | None = None
    spent: int = 0  # tokens already counted against the key
    on_workflow: list[tuple[int, str | None]] | None = None  # else ``expect``
    network: bool = False  # about the client's address

    def expected(self, surface: Surface) -> list[tuple[int, str | None]]:
        return self.on_workflow if surface.runs_workflow and self.on_workflow else self.expect


IN_SCOPE = [MODEL, f"workflow/{FLOW}"]
CASES = {
    "rpm": Case({"rpm_limit": 1}, [OK, (429, "rate_limit_exceeded")]),
    "tpm": Case({"tpm_limit": 1000}, [(429, "token_rate_limit_exceeded")], spent=1000),
    "budget": Case({"token_budget": 1000, "budget_period": "day"},
                   [(429, "budget_exhausted")], spent=1000),
    "model-in-scope": Case({"allowed_models": IN_SCOPE}, [OK]),
    "model-out-of-scope": Case({"allowed_models": IN_SCOPE}, [(403, "model_not_allowed")],
                               picks=OTHER),
    # the workflow's own model is fine, and no other model opens
    "workflow-scope": Case({"allowed_models": [f"workflow/{FLOW}"]},
                           [(403, "model_not_allowed")], on_workflow=[OK]),
    "network-allowed": Case({"allowed_cidrs": ["127.0.0.0/8"]}, [OK], network=True),
    "network-refused": Case({"allowed_cidrs": ["10.0.0.0/8"]}, [(403, "ip_not_allowed")],
                            network=True),
    "proxied-allowed": Case({"allowed_cidrs": ["10.0.0.0/8"]}, [OK], forwarded_for=CLIENT,
                            network=True),
    "proxied-refused": Case({"allowed_cidrs": ["127.0.0.0/8"]}, [(403, "ip_not_allowed")],
                            forwarded_for=CLIENT, network=True),
}


def run_case(url: str, surface_name: str, case_name: str) -> tuple[list, list]:
    """What the case's requests got on the surface, and what they should get."""
    surface, case = SURFACES[surface_name], CASES[case_name]
    key, secret = create_key(f"{surface_name}/{case_name}", **case.key)
    clear_of_the_minute_edge()
    if case.spent:
        record_usage(key, case.spent)
    expected = case.expected(surface)
    got = [surface.send(Request(url, secret, case.picks, case.forwarded_for))
           for _ in expected]
    assert all(o.answered == (o.status == 200) for o in got)
    if surface_name == "v1-messages":  # Anthropic's shape: no code to compare
        expected = [(status, None) for status, _code in expected]
    return [(o.status, o.code if want[1] is not None else None)
            for o, want in zip(got, expected, strict=True)], expected


@pytest.mark.parametrize("surface_name", SURFACES)
def test_admission_matrix(registry, surface_name: str):
    """Every case on one surface (a row of the matrix per test: one database reset)."""
    surface = SURFACES[surface_name]
    wrong = {}
    for case_name, case in CASES.items():
        if case.network and not surface.has_network:
            continue  # no client address here: checked when its work was created
        got, expected = run_case(registry, surface_name, case_name)
        if got != expected:
            wrong[case_name] = {"got": got, "expected": expected}

    assert not wrong, wrong


# --- bursts ---------------------------------------------------------------------------------


@dataclass
class Burst:
    answered: int = 0
    refused: list[str] = field(default_factory=list)


async def _v1_burst(url: str, secret: str) -> Burst:
    found = Burst()
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {secret}"}) as client:
        replies = await asyncio.gather(*(client.post("/v1/chat/completions", json={
            "model": MODEL, "messages": HELLO}) for _ in range(20)))
    for reply in replies:
        if reply.status_code == 200:
            found.answered += 1
        else:
            found.refused.append(reply.json()["error"]["code"])
    return found


def test_twenty_parallel_v1_requests_on_an_rpm_5_key_get_exactly_5_answers(registry):
    _key, secret = create_key("burst-v1", rpm_limit=5)
    clear_of_the_minute_edge()

    found = asyncio.run(_v1_burst(registry, secret))

    assert found.answered == 5
    assert found.refused == ["rate_limit_exceeded"] * 15


async def _ws_burst(url: str, secret: str) -> Burst:
    request = Request(url, secret)
    outcomes = await asyncio.gather(*(_turn(request, {"model": MODEL}) for _ in range(20)))
    found = Burst()
    for outcome in outcomes:
        if outcome.answered:
            found.answered += 1
        else:
            found.refused.append(outcome.code or "")
    return found


def test_twenty_parallel_websocket_turns_on_an_rpm_5_key_get_exactly_5_answers(registry):
    _key, secret = create_key("burst-ws", rpm_limit=5)
    clear_of_the_minute_edge()

    found = asyncio.run(_ws_burst(registry, secret))

    assert found.answered == 5
    assert found.refused == ["rate_limit_exceeded"] * 15


async def _turns(url: str, secret: str, model: str, count: int) -> list[Outcome]:
    request = Request(url, secret)
    return [await _turn(request, {"model": model}) for _ in range(count)]


def test_the_issues_key_gets_on_the_websocket_the_refusals_it_gets_on_v1(registry):
    # given: `openclaw keys create --models acc-model --budget 20 --rpm 3`
    key, secret = create_key("issue-19", allowed_models=[MODEL], token_budget=20,
                              rpm_limit=3)
    clear_of_the_minute_edge(margin=10)

    outside = asyncio.run(_turns(registry, secret, OTHER, 2))
    inside = asyncio.run(_turns(registry, secret, MODEL, 4))

    assert [(o.status, o.code) for o in outside] == [(403, "model_not_allowed")] * 2
    answered = [o for o in inside if o.answered]
    assert 1 <= len(answered) <= 3  # the rpm, else the 20 tokens, stop the rest
    assert inside[-1].status == 429
    assert {o.code for o in inside if not o.answered} <= {"budget_exhausted",
                                                          "rate_limit_exceeded"}
    used = read(key_limits(key)).values
    assert used[0] == len(answered) and used[1] <= 20 + 2 * 8  # one turn's overshoot at most
