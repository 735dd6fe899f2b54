"""OpenAI's published OpenAPI document (``tests/openapi/openai.json``, cut to the
operations OpenClaw serves by ``tests/openapi/prune_spec.py``) driven by schemathesis
against the live server and a loopback OpenAI-compatible backend: valid and
malformed bodies, 100 examples an operation (and schemathesis's coverage cases),
derandomized: the same cases every run. No answer may be a 5xx,
a malformed request must get a 4xx, and every answer must fit the document.

Checks left out, and why:
- ``status_code_conformance``: the document lists only 200 (and 429 for chat); every
  refusal here is a 4xx in OpenAI's error shape, as OpenAI's own are.
- ``positive_data_acceptance``: bodies the document allows but OpenClaw refuses with
  a 400 naming the field — built-in tools, audio output, background responses, a
  model that is not registered — would count as failures.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
)

from routing.keys import create_key
from routing.models import ModelEndpoint

pytestmark = pytest.mark.django_db(transaction=True)

SPEC = Path(__file__).resolve().parents[1] / "openapi" / "openai.json"
EXAMPLES = 100

schema = schemathesis.openapi.from_path(SPEC)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=EXAMPLES, deterministic=True)
schema.config.update(request_timeout=30)
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance,
          negative_data_rejection]


@dataclass(frozen=True)
class Known:
    """A response-schema violation that is the document's, not OpenClaw's."""

    reason: str
    applies: Callable[[schemathesis.Case, schemathesis.Response, Failure], bool]


def _body(case: schemathesis.Case) -> dict:
    return case.body if isinstance(case.body, dict) else {}


def streamed_chunks_fit(content: bytes) -> bool:
    """Whether every event of a streamed chat answer is ``[DONE]`` or a chunk as the
    document's ``CreateChatCompletionStreamResponse`` requires it (its required fields,
    ``choices`` a list of choices with an index and a delta)."""
    events = [line[len("data: "):] for line in content.decode().split("\n\n")
              if line.startswith("data: ")]
    for data in events:
        if data == "[DONE]":
            continue
        chunk = json.loads(data)
        if not (isinstance(chunk, dict) and chunk.get("object") == "chat.completion.chunk"
                and isinstance(chunk.get("id"), str) and isinstance(chunk.get("model"), str)
                and isinstance(chunk.get("created"), int)
                and isinstance(chunk.get("choices"), list)
                and all(isinstance(c, dict) and isinstance(c.get("index"), int)
                        and isinstance(c.get("delta"), dict) for c in chunk["choices"])):
            return False
    return bool(events) and events[-1] == "[DONE]"


KNOWN = [
    Known("embeddings asked for as base64 are a base64 string, as OpenAI answers them; "
          "the document types every embedding as an array of numbers",
          lambda case, response, failure: case.path == "/embeddings"
          and _body(case).get("encoding_format") == "base64"
          and 'is not of type "array"' in failure.message),
    Known("the document gives a streamed chat answer (text/event-stream) the schema of "
          "one chunk, which schemathesis applies to each SSE event's envelope "
          "({data, event}); each event's data is checked against that schema here instead",
          lambda case, response, failure: response.status_code == 200
          and case.path == "/chat/completions" and failure.message.startswith("Event #")
          and '"choices" is a required property' in failure.message
          and streamed_chunks_fit(response.content)),
    Known("a 404 of deleting a response is wrapped in {\"error\": …} as every OpenAI error "
          "is (and as the openai SDK reads it); the document describes the bare object",
          lambda case, response, failure: case.method == "DELETE"
          and response.status_code == 404
          and case.path.startswith("/responses")),
]


class Api:
    def __init__(self, base: str, secret: str):
        self.base = f"{base}/v1"
        self.headers = {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def api(live_server_url, openai_server) -> Api:
    ModelEndpoint.objects.create(name="gpt", engine="openai", endpoint_url=openai_server.url,
                                 upstream_model="echo")
    return Api(live_server_url, create_key("fuzz")[1])


def aimed(case: schemathesis.Case) -> None:
    """Point a valid request at the registered model, so it reaches the backend and its
    answer is checked too (a malformed one keeps what it was generated with)."""
    if case.meta is not None and case.meta.generation.mode == GenerationMode.NEGATIVE:
        return
    if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        case.body["model"] = "gpt"
    if case.path_parameters and "model" in case.path_parameters:
        case.path_parameters["model"] = "gpt"


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_the_openai_document(case: schemathesis.Case, api: Api) -> None:
    aimed(case)
    response = case.call(base_url=api.base, headers=api.headers)
    try:
        case.validate_response(response, checks=CHECKS)
    except FailureGroup as group:
        failures = [f for f in group.exceptions
                    if not any(known.applies(case, response, f)
                               for known in KNOWN)]
        if failures:
            raise FailureGroup(failures, group.message) from None


def test_a_streamed_answer_is_checked_chunk_by_chunk():
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
             "model": "gpt", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
    good = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
    no_choices = f"data: {json.dumps(chunk | {'choices': None})}\n\ndata: [DONE]\n\n".encode()
    cut_short = f"data: {json.dumps(chunk)}\n\n".encode()

    assert streamed_chunks_fit(good)
    assert not streamed_chunks_fit(no_choices)
    assert not streamed_chunks_fit(cut_short)
