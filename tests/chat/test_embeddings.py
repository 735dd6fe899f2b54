"""``POST /v1/embeddings`` through the official ``openai`` SDK against a live daphne:
the local all-MiniLM-L6-v2 model (offline), a loopback OpenAI backend, base64 and
batch order, refusals in OpenAI's shape; and LangChain's ``ChatOpenAI`` unchanged."""

from __future__ import annotations

import base64
import math
import os
import struct
from pathlib import Path

import httpx
import openai
import pytest
from django.core.management import call_command

from routing.keys import create_key
from routing.models import ModelEndpoint
from tests.openai_server import EMBEDDING_DIMENSIONS, embedding

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)
MINILM = "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def live_url(request):
    """The live daphne, started with the Hugging Face hub offline: the model is bundled."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield request.getfixturevalue("live_server_url")
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


@pytest.fixture
def secret() -> str:
    return create_key("tests")[1]


@pytest.fixture
def minilm() -> None:
    call_command("loaddata", str(REPO / "fixtures" / "30_embedding.json"), verbosity=0)


def client(url: str, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0, timeout=60)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_local_model_gives_normalised_384d_vectors_that_rank_by_meaning(live_url, secret,
                                                                       minilm):
    texts = ["A cat sits on the mat.", "A kitten is resting on a rug.",
             "The central bank raised interest rates."]

    raw = client(live_url, secret).embeddings.with_raw_response.create(
        model=MINILM, input=texts, encoding_format="float")
    result = raw.parse()

    vectors = [item.embedding for item in result.data]
    assert [item.index for item in result.data] == [0, 1, 2]
    assert all(len(v) == 384 for v in vectors)
    assert all(math.isclose(math.sqrt(cosine(v, v)), 1.0, abs_tol=1e-4) for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert result.model == MINILM and result.usage.prompt_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens
    assert raw.headers["x-openclaw-model"] == MINILM
    assert raw.headers["x-openclaw-route"] == "direct; instance=30"
    assert float(raw.headers["x-openclaw-overhead-ms"]) >= 0


def test_base64_decodes_to_the_float_vector_and_batch_order_is_kept(live_url, secret, minilm):
    sdk = client(live_url, secret)
    texts = ["first sentence", "a second, different one", "third"]

    floats = sdk.embeddings.create(model=MINILM, input=texts, encoding_format="float")
    reversed_ = sdk.embeddings.create(model=MINILM, input=texts[::-1])  # the SDK asks base64
    raw = httpx.post(f"{live_url}/v1/embeddings", headers={"Authorization": f"Bearer {secret}"},
                     json={"model": MINILM, "input": texts[0], "encoding_format": "base64"})

    encoded = raw.json()["data"][0]["embedding"]
    decoded = list(struct.unpack("<384f", base64.b64decode(encoded)))
    assert all(math.isclose(a, b, abs_tol=1e-6)
               for a, b in zip(decoded, floats.data[0].embedding, strict=True))
    for mine, theirs in zip(floats.data, reversed(reversed_.data), strict=True):
        assert cosine(mine.embedding, theirs.embedding) > 0.9999


def test_dimensions_cut_and_renormalise(live_url, secret, minilm):
    result = client(live_url, secret).embeddings.create(
        model=MINILM, input="hello", dimensions=64, encoding_format="float")

    vector = result.data[0].embedding
    assert len(vector) == 64 and math.isclose(cosine(vector, vector), 1.0, abs_tol=1e-4)


def test_openai_backend_embeddings_are_forwarded(live_url, openai_server, secret):
    ModelEndpoint.objects.create(name="remote-embed", engine="openai",
                                 endpoint_url=openai_server.url, upstream_model="up-embed")

    result = client(live_url, secret).embeddings.create(
        model="remote-embed", input=["one two", "three"], encoding_format="float")

    sent = openai_server.requests[-1]
    assert sent.path == "/v1/embeddings" and sent.body["model"] == "up-embed"
    assert sent.body["input"] == ["one two", "three"]
    assert [d.embedding for d in result.data] == [embedding("one two", EMBEDDING_DIMENSIONS),
                                                  embedding("three", EMBEDDING_DIMENSIONS)]
    assert result.usage.prompt_tokens == 3 and result.model == "remote-embed"


def test_refusals_come_in_openais_shape(live_url, secret, minilm):
    _key, scoped = create_key("scoped", allowed_models=["other"])
    _key, limited = create_key("limited", rpm_limit=1)
    sdk = client(live_url, secret)

    with pytest.raises(openai.PermissionDeniedError) as denied:
        client(live_url, scoped).embeddings.create(model=MINILM, input="hi")
    with pytest.raises(openai.BadRequestError) as empty:
        sdk.embeddings.create(model=MINILM, input=[])
    with pytest.raises(openai.BadRequestError) as tokens:
        sdk.embeddings.create(model=MINILM, input=[[1, 2, 3]])
    with pytest.raises(openai.BadRequestError) as fmt:
        sdk.embeddings.create(model=MINILM, input="hi", encoding_format="int8")  # type: ignore
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.embeddings.create(model="no-such-model", input="hi")
    client(live_url, limited).embeddings.create(model=MINILM, input="hi")
    with pytest.raises(openai.RateLimitError):
        client(live_url, limited).embeddings.create(model=MINILM, input="hi")

    assert denied.value.code == "model_not_allowed"
    assert empty.value.body["param"] == "input" and empty.value.body["type"] == (
        "invalid_request_error")
    assert tokens.value.body["param"] == "input"
    assert fmt.value.body["param"] == "encoding_format"
    assert missing.value.code == "model_not_found"


def test_chatting_with_the_embedding_model_is_refused_with_400(live_url, secret, minilm):
    sdk = client(live_url, secret)
    hello = [{"role": "user", "content": "hello"}]

    with pytest.raises(openai.BadRequestError) as whole:
        sdk.chat.completions.create(model=MINILM, messages=hello)
    with pytest.raises(openai.BadRequestError) as streamed:
        sdk.chat.completions.create(model=MINILM, messages=hello, stream=True)

    assert "cannot chat" in whole.value.message and "cannot chat" in streamed.value.message


def test_langchain_chat_openai_invokes_and_streams(live_url, openai_server, secret):
    from langchain_openai import ChatOpenAI

    ModelEndpoint.objects.create(name="lc-model", engine="openai",
                                 endpoint_url=openai_server.url, upstream_model="echo")
    chat = ChatOpenAI(base_url=f"{live_url}/v1", api_key=secret, model="lc-model",
                      max_retries=0, timeout=20)

    answer = chat.invoke("hello there")
    chunks = [chunk.content for chunk in chat.stream("hello again")]

    assert answer.content == "echo: hello there"
    assert len([c for c in chunks if c]) > 1
    assert "".join(chunks) == "echo: hello again"
