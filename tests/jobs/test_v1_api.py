"""``/v1/files`` and ``/v1/batches`` through the official ``openai`` SDK against a
live daphne and a real batch worker: upload, create, retrieve until done, download
the results; listing, cancelling, ownership and refusals in OpenAI's shape."""

from __future__ import annotations

import json
import time

import openai
import pytest
from django.core.management import call_command

from routing import rules
from routing.keys import create_key
from tests.chat.conftest import live_server_url  # noqa: F401 - the live daphne fixture

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def echo():
    call_command("loaddata", "fixtures/10_models.json", verbosity=0)
    rules.clear_local_copy()
    rules.bump_version()


def client(url: str, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0, timeout=20)


def requests_jsonl(count: int, bad_line: str | None = None) -> bytes:
    rows = [json.dumps({"custom_id": f"task-{n}", "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": {"model": "echo", "max_tokens": 20,
                                 "messages": [{"role": "user", "content": f"say {n}"}]}})
            for n in range(count)]
    if bad_line is not None:
        rows.insert(1, bad_line)
    return ("\n".join(rows) + "\n").encode()


def test_sdk_files_and_batches_round_trip(live_server_url, start_worker, echo):  # noqa: F811
    start_worker(queues="batch")
    sdk = client(live_server_url, create_key("batcher")[1])

    uploaded = sdk.files.create(file=("requests.jsonl", requests_jsonl(5, "{broken")),
                                purpose="batch")
    created = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                 completion_window="24h", metadata={"run": "sdk"})
    deadline = time.monotonic() + 60
    current = sdk.batches.retrieve(created.id)
    while current.status not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, current
        time.sleep(0.2)
        current = sdk.batches.retrieve(created.id)
    output = sdk.files.content(current.output_file_id).text
    errors = sdk.files.content(current.error_file_id).text

    assert uploaded.purpose == "batch" and uploaded.bytes > 0
    assert created.status == "validating" and created.metadata == {"run": "sdk"}
    assert current.status == "completed"
    assert (current.request_counts.total, current.request_counts.completed,
            current.request_counts.failed) == (5, 5, 0)
    assert [(e.line, e.code) for e in current.errors.data] == [(2, "invalid_request")]
    results = [json.loads(line) for line in output.splitlines()]
    assert [r["custom_id"] for r in results] == [f"task-{n}" for n in range(5)]
    assert results[3]["response"]["body"]["choices"][0]["message"]["content"] == "say 3"
    assert json.loads(errors.splitlines()[0])["line"] == 2
    assert [b.id for b in sdk.batches.list()] == [created.id]


def test_cancel_list_and_refusals_in_openai_shape(live_server_url, echo):  # noqa: F811
    sdk = client(live_server_url, create_key("owner")[1])
    stranger = client(live_server_url, create_key("stranger")[1])
    uploaded = sdk.files.create(file=("r.jsonl", requests_jsonl(3)), purpose="batch")
    # no worker consumes the batch queue here: the job stays queued until cancelled
    created = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                 completion_window="24h")

    cancelled = sdk.batches.cancel(created.id)

    assert cancelled.status == "cancelled"
    assert sdk.files.retrieve(uploaded.id).filename == "r.jsonl"
    with pytest.raises(openai.NotFoundError) as missing:
        stranger.batches.retrieve(created.id)
    assert missing.value.body["code"] == "not_found"
    with pytest.raises(openai.NotFoundError):
        stranger.files.content(uploaded.id)
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions",
                           completion_window="24h")
    assert bad.value.body["param"] == "endpoint"
    with pytest.raises(openai.AuthenticationError):
        client(live_server_url, "oc_nope.secret").batches.list()
    with pytest.raises(openai.ConflictError) as in_use:
        sdk.files.delete(uploaded.id)
    assert in_use.value.body["code"] == "file_in_use"
