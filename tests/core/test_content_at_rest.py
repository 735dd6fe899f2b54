"""User content outside messages is encrypted at rest too: conversation titles, batch
files and the bodies of their lines, datasets (``core.fields``' encrypted text, JSON
and bytes), and response-cache entries in Redis. A raw SELECT shows no plaintext, the
models read it back, titles are still searched (in Python), key rotation re-seals every
kind, and the migrations seal an existing install's rows (and open them going back)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from chat.conversations import matching_titles
from chat.models import Conversation
from core import crypto
from core.rotation import rotate_data
from jobs.models import BatchFile, BatchJob, BatchLine, Dataset
from openclaw_site.backup import key_ids_in_use
from routing import response_cache

SECRET = "the launch code is tangerine-42"


def raw(table: str, column: str) -> list:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table}")  # noqa: S608  (test names only)
        return [bytes(v) if isinstance(v, memoryview) else v for (v,) in cursor.fetchall()]


def batch_rows() -> tuple[BatchFile, BatchLine, Dataset]:
    upload = BatchFile.objects.create(purpose="batch", filename="in.jsonl",
                                      content=SECRET.encode(), bytes=len(SECRET))
    job = BatchJob.objects.create(input_file=upload)
    line = BatchLine.objects.create(job=job, line=1, chunk=0, custom_id="a",
                                    body={"messages": [{"role": "user", "content": SECRET}]},
                                    response={"text": SECRET})
    dataset = Dataset.objects.create(name="set", content=SECRET.encode(), sha256="x")
    return upload, line, dataset


def test_sealed_bytes_round_trip_and_name_their_key():
    sealed = crypto.encrypt_bytes(SECRET.encode())

    assert SECRET.encode() not in sealed and sealed != crypto.encrypt_bytes(SECRET.encode())
    assert crypto.key_id_of_bytes(sealed[:70]) == crypto.active_key_id()
    assert crypto.decrypt_bytes(sealed) == SECRET.encode()
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt_bytes(sealed[:-1] + bytes([sealed[-1] ^ 1]))
    assert crypto.key_id_of_bytes(b"plain text") is None


@pytest.mark.django_db
def test_files_line_bodies_datasets_and_titles_hold_no_plaintext_in_the_database():
    upload, line, dataset = batch_rows()
    Conversation.objects.create(user="ada", title=SECRET)

    stored = [*raw("jobs_batchfile", "content"), *raw("jobs_dataset", "content"),
              *raw("jobs_batchline", "body"), *raw("jobs_batchline", "response"),
              *raw("chat_conversation", "title")]

    assert all(b"tangerine" not in (v if isinstance(v, bytes) else v.encode()) for v in stored)
    assert bytes(BatchFile.objects.get().content) == SECRET.encode()
    assert bytes(Dataset.objects.get().content) == SECRET.encode()
    line = BatchLine.objects.get()
    assert line.body["messages"][0]["content"] == SECRET and line.response == {"text": SECRET}
    assert Conversation.objects.get().title == SECRET


@pytest.mark.django_db
def test_empty_and_null_values_stay_as_they_are():
    BatchFile.objects.create(purpose="batch", filename="empty.jsonl", content=b"", bytes=0)
    job = BatchJob.objects.create(input_file=BatchFile.objects.get())
    BatchLine.objects.create(job=job, line=1, chunk=0, custom_id="a", body={}, response=None)

    assert raw("jobs_batchfile", "content") == [b""]
    assert raw("jobs_batchline", "response") == [None]
    assert BatchLine.objects.get().response is None and BatchLine.objects.get().body == {}


@pytest.mark.django_db
def test_titles_are_searched_in_python_by_the_studio_and_the_admin():
    lisbon = Conversation.objects.create(user="ada", title="Trip to Lisbon")
    Conversation.objects.create(user="ada", title="Tax questions")
    admin = User.objects.create_superuser("root", "r@example.com", "pw")
    client = Client()
    client.force_login(admin)

    assert matching_titles(Conversation.objects.all(), "LISBON") == [lisbon.pk]
    listed = client.get("/admin/chat/conversation/?q=lisbon").content.decode()
    assert "Trip to Lisbon" in listed and "Tax questions" not in listed


@pytest.mark.django_db
def test_rotation_reseals_titles_files_bodies_and_datasets(settings):
    old = crypto.parse_keys(crypto.new_key_spec("old"))
    settings.ENCRYPTION_KEYS = old
    batch_rows()
    Conversation.objects.create(user="ada", title=SECRET)

    settings.ENCRYPTION_KEYS = {**crypto.parse_keys(crypto.new_key_spec("new")), **old}
    report = rotate_data()

    for label in ("chat.Conversation.title", "jobs.BatchFile.content", "jobs.Dataset.content",
                  "jobs.BatchLine.body", "jobs.BatchLine.response"):
        assert report.rotated[label] == 1, label
    assert {crypto.key_id_of_bytes(v) for v in raw("jobs_batchfile", "content")} == {"new"}
    assert key_ids_in_use() == {"new"}
    settings.ENCRYPTION_KEYS = {"new": settings.ENCRYPTION_KEYS["new"]}
    assert bytes(Dataset.objects.get().content) == SECRET.encode()
    assert BatchLine.objects.get().response == {"text": SECRET}
    assert Conversation.objects.get().title == SECRET


async def test_response_cache_entries_in_redis_are_encrypted(settings):
    settings.OPENCLAW_RESPONSE_CACHE = "redis"
    key = response_cache.cache_key("m", [{"role": "user", "content": SECRET}],
                                   {"temperature": 0, "seed": id(settings)})
    await response_cache.aput(key, {"text": SECRET})
    import redis.asyncio  # the test reads Redis itself, beside the code under test

    client = redis.asyncio.Redis.from_url(settings.CACHE_LOCATION)
    try:
        stored = await client.get(key)
    finally:
        await client.aclose()

    assert stored is not None and b"tangerine" not in stored
    assert await response_cache.aget(key) == {"text": SECRET}


# --- the migrations on an existing install --------------------------------------------

BEFORE = [("chat", "0007_stored_responses"), ("jobs", "0002_job_base_and_tables")]


def migrate(targets) -> None:
    MigrationExecutor(connection).migrate(targets)


@pytest.fixture
def upgraded_at_the_end():
    yield
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_migrations_seal_existing_rows_and_open_them_going_back(upgraded_at_the_end):
    # given: an install from before, with content in clear (one title only looks sealed)
    migrate(BEFORE)
    old = MigrationExecutor(connection).loader.project_state(BEFORE).apps
    body = {"messages": [{"role": "user", "content": SECRET}]}
    old.get_model("chat", "Conversation").objects.bulk_create([
        old.get_model("chat", "Conversation")(user="ada", title=SECRET),
        old.get_model("chat", "Conversation")(user="bob", title="v1: a plan")])
    upload = old.get_model("jobs", "BatchFile").objects.create(
        id="file-old", purpose="batch", filename="in.jsonl", content=SECRET.encode(), bytes=1)
    job = old.get_model("jobs", "BatchJob").objects.create(id="batch_old", input_file=upload)
    old.get_model("jobs", "BatchLine").objects.create(job=job, line=1, chunk=0, custom_id="a",
                                                      body=body)

    # when: it upgrades
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    # then: sealed in the database, read back by the models
    assert all(v.startswith("v1:") for v in raw("chat_conversation", "title"))
    assert b"tangerine" not in raw("jobs_batchfile", "content")[0]
    assert "tangerine" not in raw("jobs_batchline", "body")[0]
    assert sorted(Conversation.objects.values_list("title", flat=True)) == [SECRET, "v1: a plan"]
    assert bytes(BatchFile.objects.get().content) == SECRET.encode()
    assert BatchLine.objects.get().body == body and BatchLine.objects.get().response is None

    # and going back opens them again
    migrate(BEFORE)
    assert sorted(raw("chat_conversation", "title")) == [SECRET, "v1: a plan"]
    assert raw("jobs_batchfile", "content") == [SECRET.encode()]
    (stored,) = raw("jobs_batchline", "body")
    assert (json.loads(stored) if isinstance(stored, str) else stored) == body
