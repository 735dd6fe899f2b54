"""No user content at rest in clear: a canary — a word made up for this run — is sent
through every surface that takes content (``/v1`` chat completions plain, cached,
streamed, in a server-side conversation and through a workflow that waits for approval
and is resumed; Responses with ``store``; Anthropic Messages; legacy completions;
embeddings; a conversation import; the studio websocket; batch files and batches run
by a real worker; an annotation's correction; a dataset export), then looked for in a
``pg_dump`` of the database, the database's write-ahead log, every value of every
Redis database (strings, lists, hashes, sets, sorted sets, streams) and Redis's
append-only file, and every log line: the web server's, the worker's, PostgreSQL's
and this process's.

It looks for the canary's bytes as they are, in hex (``bytea`` in a dump) and in
base64 (at each of the three alignments). Before looking, it checks the canary did go
through: each surface answered it back and the rows hold it, decrypted."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
import websockets
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.test import Client

from chat.models import Conversation, Message, StoredResponse, Workflow, WorkflowRun
from core.logging import JsonFormatter
from jobs.models import Annotation, BatchFile, BatchJob, BatchStatus, Dataset
from openclaw_site.backup import Database
from routing.keys import create_key
from routing.models import ModelEndpoint
from tests.chat.conftest import web_server

pytestmark = pytest.mark.django_db(transaction=True)

CANARY = f"canary{uuid.uuid4().hex[:16]}"
MODEL = "canary-model"


def needles(word: str) -> dict[str, bytes]:
    """``word`` as stored bytes could show it: as is, hex, base64 at each alignment
    (the first and last base64 quartets depend on the bytes around it: left out)."""
    raw = word.encode()
    found = {"plain": raw, "hex": raw.hex().encode()}
    for pad in range(3):
        encoded = base64.b64encode(bytes(pad) + raw)
        found[f"base64+{pad}"] = encoded[4 if pad else 0:-4]
    return found


# Written in clear on purpose, where each search looks: it must be found there, so a
# search that reads nothing cannot pass.
CONTROL = f"control{uuid.uuid4().hex[:16]}"


# --- the parts: a web server, a worker, a log of this process -------------------------


@pytest.fixture
def web(transactional_db) -> Iterator[tuple[str, Path]]:
    """The web server (``openclaw web``'s uvicorn) on the test database, its response
    cache in Redis (distributed mode's default) and its log lines in JSON; its base URL
    and its log file."""
    with web_server("canary-web", OPENCLAW_RESPONSE_CACHE="redis", OPENCLAW_LOG_FORMAT="json",
                    OPENCLAW_MEMORY_TOP_K="0") as found:
        yield found


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every log record of this process, formatted as the JSON log line it would be."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


@pytest.fixture
def parts(web, openai_server, start_worker, captured):
    """The model (the loopback server: it answers ``echo: <the words>``), a key, a
    superuser signed in to the studio, and a worker for batches, logs and memory."""
    ModelEndpoint.objects.create(name=MODEL, engine="openai", upstream_model="echo",
                                 endpoint_url=openai_server.url)
    nodes = [{"id": "recall", "type": "memory_recall", "config": {"long_term": False}},
             {"id": "answer", "type": "llm"}, {"id": "review", "type": "human_approval"},
             {"id": "store", "type": "memory_write"}]
    edges = [{"source": "recall", "target": "answer"}, {"source": "answer", "target": "review"},
             {"source": "review", "target": "store"}]
    Workflow.objects.create(slug="canary-flow", name="canary flow", default_model=MODEL,
                            definition={"nodes": nodes, "edges": edges})
    _key, secret = create_key("canary")
    worker = start_worker(queues=f"default,batch,{settings.OPENCLAW_LOG_QUEUE}",
                          env={"OPENCLAW_LOG_FORMAT": "json", "HF_HUB_OFFLINE": "1"})
    admin = get_user_model().objects.create_superuser("canary-admin", "a@example.com", "pw")
    studio = Client()
    studio.force_login(admin)
    url, web_log = web
    return url, secret, studio, [web_log, worker.log_path], captured


# --- the surfaces --------------------------------------------------------------------


def say(words: str = "") -> str:
    return f"please keep {CANARY} {words}".strip()


def send_v1(url: str, secret: str) -> dict[str, str]:
    """Every /v1 surface once (the cached one twice); what they answered, by surface."""
    heard: dict[str, str] = {}
    user = [{"role": "user", "content": say()}]
    with httpx.Client(base_url=f"{url}/v1", timeout=30,
                      headers={"Authorization": f"Bearer {secret}"}) as v1:
        def post(path: str, body: dict, **kwargs) -> httpx.Response:
            answer = v1.post(path, json=body, **kwargs)
            assert answer.status_code in (200, 201), (path, answer.text)
            return answer

        for turn in ("miss", "hit"):
            cached = post("/chat/completions", {"model": MODEL, "messages": user,
                                                "temperature": 0})
            assert cached.headers["x-openclaw-cache"] == turn
        heard["chat"] = cached.json()["choices"][0]["message"]["content"]
        heard["stream"] = post("/chat/completions", {"model": MODEL, "messages": user,
                                                     "stream": True}).text
        started = post("/chat/completions", {"model": MODEL, "messages": user,
                                             "metadata": {"conversation_id": None}})
        conversation = started.headers["x-openclaw-conversation"]
        heard["conversation"] = post(
            "/chat/completions", {"model": MODEL, "messages": [
                {"role": "user", "content": say("again")}]},
            headers={"X-OpenClaw-Conversation": conversation}).text
        waiting = post("/chat/completions", {"model": "workflow/canary-flow",
                                             "messages": user}).json()["x_openclaw"]
        assert waiting["status"] == "waiting", waiting
        heard["workflow"] = post("/chat/completions", {
            "model": "workflow/canary-flow", "messages": [{"role": "user", "content": "ok"}],
            "metadata": {"conversation_id": waiting["conversation_id"],
                         "resume": {"action": "edit", "content": say("approved")}}}).text
        first = post("/responses", {"model": MODEL, "input": say(), "store": True,
                                    "instructions": say("instructions")}).json()
        heard["responses"] = post("/responses", {
            "model": MODEL, "input": say("second"), "store": True,
            "previous_response_id": first["id"]}).text
        heard["messages"] = post("/messages", {
            "model": MODEL, "max_tokens": 50, "system": say("system"),
            "messages": user}, headers={"anthropic-version": "2023-06-01"}).text
        heard["completions"] = post("/completions", {"model": MODEL, "prompt": say()}).text
        post("/embeddings", {"model": MODEL, "input": [say()]})
        session = {"session_id": str(uuid.uuid4()), "context_vectors": [], "messages": [
            {"role": "user", "content": say("imported"), "timestamp": "2026-11-01T10:00:00Z"},
            {"role": "assistant", "content": say("answer"),
             "timestamp": "2026-11-01T10:00:01Z"}]}
        post("/conversations/import", session)
    return heard


async def send_websocket(url: str, secret: str) -> str:
    """A new studio conversation over the websocket; the answer's text."""
    async with websockets.connect(url.replace("http://", "ws://") + "/ws/chat/new/",
                                  additional_headers={"Authorization": f"Bearer {secret}"},
                                  origin=url, open_timeout=10) as ws:
        await ws.send(json.dumps({"type": "message", "id": "canary", "content": say(),
                                  "model": MODEL}))
        async with asyncio.timeout(20):
            while (frame := json.loads(await ws.recv()))["type"] not in ("done", "error"):
                pass
    assert frame["type"] == "done", frame
    return frame["content"]


def run_batch(url: str, secret: str) -> str:
    """A batch file of two lines run by the worker; the output file's text."""
    lines = "".join(json.dumps({"custom_id": f"line-{n}", "method": "POST",
                                "url": "/v1/chat/completions", "body": {
                                    "model": MODEL, "messages": [
                                        {"role": "user", "content": say(f"line {n}")}]}})
                    + "\n" for n in range(2))
    with httpx.Client(base_url=f"{url}/v1", timeout=30,
                      headers={"Authorization": f"Bearer {secret}"}) as v1:
        upload = v1.post("/files", data={"purpose": "batch"},
                         files={"file": ("canary.jsonl", lines.encode())})
        assert upload.status_code == 200, upload.text
        job = v1.post("/batches", json={"input_file_id": upload.json()["id"],
                                        "endpoint": "/v1/chat/completions",
                                        "completion_window": "24h"})
        assert job.status_code == 200, job.text
        deadline = time.monotonic() + 30
        while (found := BatchJob.objects.get(pk=job.json()["id"])).status != \
                BatchStatus.COMPLETED:
            assert not found.finished and time.monotonic() < deadline, found.status
            time.sleep(0.1)
        return v1.get(f"/files/{found.output_file_id}/content").text


def annotate_and_export(studio: Client) -> Dataset:
    """A correction of every assistant reply, then a dataset of those conversations."""
    replies = Message.objects.filter(role="assistant")
    for reply in replies:
        answer = studio.post(f"/studio/api/annotations/messages/{reply.pk}/",
                             {"rating": "down", "corrected_content": say("corrected")},
                             content_type="application/json")
        assert answer.status_code == 200, answer.content
    ids = sorted({str(r.conversation_id) for r in replies})
    made = studio.post("/studio/api/datasets/", {
        "name": "canary-set", "include_flagged": True, "filters": {"conversation_ids": ids}},
        content_type="application/json")
    assert made.status_code in (200, 201), made.content
    return Dataset.objects.get(name="canary-set")


# --- where it is looked for ----------------------------------------------------------


def database_dump() -> bytes:
    database = Database.from_settings(connection.settings_dict)
    result = database.run("pg_dump", "--format=plain", "--no-owner", "--no-privileges",
                          f"--dbname={database.conninfo}", stdout=subprocess.PIPE)
    assert result.returncode == 0, result.stderr
    assert b"COPY public.chat_message" in result.stdout
    return result.stdout


def write_ahead_log() -> Iterator[tuple[str, bytes]]:
    """Each segment of the write-ahead log, one at a time (16 MB each)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_switch_wal()")  # flushed, into closed segments
    folder = Path(settings.EMBEDDED_PG_DIR) / "pg_wal"
    for path in sorted(folder.iterdir()):
        if path.is_file():
            yield path.name, path.read_bytes()


def redis_values() -> Iterator[tuple[str, bytes]]:
    """Every key of every database of the test Redis, with all its values joined."""
    for db in range(16):
        client = redis.Redis(unix_socket_path=str(settings.EMBEDDED_REDIS_SOCKET), db=db)
        try:
            for key in client.scan_iter(count=1000):
                yield f"{db}:{key!r}", key + b"\n" + _joined(client, key)
        finally:
            client.close()


def _joined(client: redis.Redis, key: bytes) -> bytes:
    kind = client.type(key).decode()
    parts: list = {
        "string": lambda: [client.get(key)],
        "list": lambda: client.lrange(key, 0, -1),
        "hash": lambda: [b for pair in client.hgetall(key).items() for b in pair],
        "set": lambda: list(client.smembers(key)),
        "zset": lambda: [m for m, _score in client.zrange(key, 0, -1, withscores=True)],
        "stream": lambda: [json.dumps({k.decode(): v.decode(errors="replace")
                                       for k, v in fields.items()}).encode()
                           for _id, fields in client.xrange(key)],
    }.get(kind, lambda: [])()
    return b"\n".join(p for p in parts if p is not None)


def redis_files() -> Iterator[tuple[str, bytes]]:
    """What the embedded Redis keeps on disk: its append-only file. The broker's
    messages pass through it too; no surface here sends content through the broker
    (a worker engine's request would, while in flight, and stay in the file until
    Redis rewrites it)."""
    for path in Path(settings.EMBEDDED_REDIS_DIR).rglob("*.aof*"):
        if path.is_file():
            yield path.name, path.read_bytes()


def log_lines(files: list[Path], captured: io.StringIO) -> Iterator[tuple[str, bytes]]:
    for path in [*files, Path(settings.EMBEDDED_PG_DIR) / "log"]:
        yield str(path), path.read_bytes()
    yield "this process", captured.getvalue().encode()


Found = dict[str, list[str]]  # where → the forms found there


def search(where: Iterable[tuple[str, bytes]]) -> tuple[Found, Found]:
    """(where the canary is, where the control is), in one pass."""
    wanted = (needles(CANARY), needles(CONTROL))
    found: tuple[Found, Found] = ({}, {})
    for name, blob in where:
        for hits, forms in zip(found, wanted, strict=True):
            if matched := [form for form, needle in forms.items() if needle in blob]:
                hits[name] = matched
    return found


def write_controls(url: str) -> None:
    """``CONTROL`` in clear: in a row, a Redis value, the web server's log (a 404 is
    logged with its path) and this process's."""
    Workflow.objects.filter(slug="canary-flow").update(description=CONTROL)
    cache.set("canary-control", CONTROL, 60)
    assert httpx.get(f"{url}/studio/{CONTROL}/").status_code == 404
    logging.getLogger(__name__).warning("control %s", CONTROL)


# --- the test ------------------------------------------------------------------------


def test_a_canary_through_every_surface_is_in_no_dump_no_redis_value_and_no_log(parts):
    url, secret, studio, log_files, captured = parts

    # when: the canary goes through every surface
    heard = send_v1(url, secret)
    heard["websocket"] = asyncio.run(send_websocket(url, secret))
    heard["batch"] = run_batch(url, secret)
    dataset = annotate_and_export(studio)

    # then: it went through — answered back, and kept (decrypted) where it belongs
    assert {name for name, text in heard.items() if CANARY not in text} == set()
    assert sum(CANARY in c.title for c in Conversation.objects.all()) >= 3
    assert all(CANARY in m.content for m in Message.objects.filter(role="user", turn__gt=0)
               if m.content != "ok")
    assert CANARY in WorkflowRun.objects.get().interrupt
    assert all(CANARY in r.input_items for r in StoredResponse.objects.all())
    assert all(CANARY.encode() in bytes(f.content) for f in BatchFile.objects.all())
    assert all(CANARY in a.corrected_content for a in Annotation.objects.all())
    assert CANARY.encode() in bytes(dataset.content) and dataset.line_count >= 3

    # and: in clear nowhere at rest, nor in any log line (where the control is found)
    write_controls(url)
    time.sleep(0.5)  # the web process ships its usage buffer every 0.25 s
    places = {"database": [("pg_dump", database_dump())], "write-ahead log": write_ahead_log(),
              "redis": redis_values(), "redis's files": redis_files(),
              "logs": log_lines(log_files, captured)}
    for kind, where in places.items():
        leaked, controls = search(where)
        assert controls, f"the control was not found in the {kind}"
        assert leaked == {}, f"the canary is in the {kind}"
        if kind == "logs":
            assert {str(log_files[0]), "this process"} <= set(controls)
