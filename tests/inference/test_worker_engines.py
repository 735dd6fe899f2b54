"""Local engines across the process boundary: the caller (this test process, as
the web process would) dispatches to a real Celery worker process that loads
a tiny Hugging Face model built on disk, and deltas stream back over the
channel layer. Then hot swap, a worker SIGKILLed mid-generation, a broken
model folder and a timeout."""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.utils import translation

from inference.engines.base import ChatRequest
from inference.errors import (
    BadRequest,
    ConnectionFailed,
    ContextTooLong,
    EngineTimeout,
    EngineUnavailable,
)
from inference.registry import build_engine
from inference.remote import LIVENESS_S, WorkerEngine
from routing.models import ModelEndpoint
from routing.services import endpoint_config
from tests.tiny_models import build_tiny_llama

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PROMPT = [{"role": "user", "content": "Hello world"}]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "a": build_tiny_llama(root / "a", seed=0),
        "b": build_tiny_llama(root / "b", seed=1),
        # wider and deeper: slow enough on CPU to be killed mid-answer
        "slow": build_tiny_llama(root / "slow", seed=2, layers=12, hidden=384),
    }


def make_endpoint(path, **fields) -> ModelEndpoint:
    defaults = {"name": "tiny", "engine": "transformers", "model_path": str(path),
                "context_window": 512, "max_output_tokens": 16, "first_byte_timeout": 60,
                "total_timeout": 120, "default_params": {"temperature": 0}}
    defaults.update(fields)
    return ModelEndpoint.objects.create(**defaults)


async def engine_for(endpoint_id: int) -> WorkerEngine:
    endpoint = await ModelEndpoint.objects.aget(pk=endpoint_id)
    engine = build_engine(endpoint_config(endpoint))
    assert isinstance(engine, WorkerEngine)
    return engine


@dataclass
class Streamed:
    text: str
    arrived: list[float]  # our clock, as each delta arrived
    produced: list[float]  # the worker's clock, as it produced each delta


async def collect(engine, max_tokens: int = 16, messages=PROMPT) -> Streamed:
    streamed = Streamed("", [], [])
    async for delta in engine.stream(ChatRequest(messages=messages, max_tokens=max_tokens)):
        streamed.arrived.append(time.time())
        streamed.produced.append(engine.last_produced_at)
        streamed.text += delta.text
    return streamed


def assert_streamed_token_by_token(streamed: Streamed) -> None:
    assert len(streamed.arrived) >= 10
    # the first delta reached us before the worker produced the last ones
    assert streamed.arrived[0] < streamed.produced[-2]


async def health_of(endpoint_id: int) -> str:
    return (await ModelEndpoint.objects.aget(pk=endpoint_id)).health


async def test_local_model_streams_token_by_token_across_the_process_boundary(
        tiny_models, start_worker):
    endpoint = await sync_to_async(make_endpoint)(tiny_models["slow"], max_output_tokens=40)
    await sync_to_async(start_worker)(queues="cpu")
    streamed = await collect(await engine_for(endpoint.pk), max_tokens=40)

    assert_streamed_token_by_token(streamed)
    assert await health_of(endpoint.pk) == "healthy"


@pytest.fixture(scope="module")
def onnx_model(tiny_models, tmp_path_factory):
    from inference.onnx_export import export_to_onnx

    return export_to_onnx(tiny_models["a"], tmp_path_factory.mktemp("onnx") / "tiny")


async def test_onnx_model_streams_across_the_process_boundary(onnx_model, start_worker):
    endpoint = await sync_to_async(make_endpoint)(onnx_model, engine="onnx",
                                                  max_output_tokens=200)
    await sync_to_async(start_worker)(queues="cpu")
    assert_streamed_token_by_token(await collect(await engine_for(endpoint.pk), max_tokens=200))


async def test_tensorrt_llm_streams_across_the_process_boundary(start_worker, tmp_path):
    """TensorRT-LLM needs an NVIDIA GPU: the worker imports the stand-in of its
    documented API (tests/stand_ins/tensorrt_llm), the adapter is the real one."""
    stand_ins = Path(__file__).resolve().parents[1] / "stand_ins"
    endpoint = await sync_to_async(make_endpoint)(tmp_path, engine="tensorrt_llm", gpu_id=0)
    await sync_to_async(start_worker)(queues="gpu", concurrency=1, env={
        "PYTHONPATH": f"{stand_ins}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "TRTLLM_STAND_IN_TOKEN_DELAY_S": "0.02"})
    words = " ".join(f"word{i}" for i in range(30))

    streamed = await collect(await engine_for(endpoint.pk), max_tokens=30,
                             messages=[{"role": "user", "content": words}])

    assert "word0" in streamed.text and "word29" in streamed.text
    assert_streamed_token_by_token(streamed)


async def test_admin_edit_of_the_model_folder_is_used_on_the_next_request(
        tiny_models, start_worker):
    endpoint = await sync_to_async(make_endpoint)(tiny_models["a"])
    worker = await sync_to_async(start_worker)(queues="cpu")
    first = (await collect(await engine_for(endpoint.pk))).text

    # when: the folder changes in the database, the worker keeps running
    await ModelEndpoint.objects.filter(pk=endpoint.pk).aupdate(model_path=str(tiny_models["b"]))
    second = (await collect(await engine_for(endpoint.pk))).text

    # then: another model answered, without a restart
    assert first != second
    assert worker.process.poll() is None
    await ModelEndpoint.objects.filter(pk=endpoint.pk).aupdate(model_path=str(tiny_models["a"]))
    again = (await collect(await engine_for(endpoint.pk))).text
    assert again == first


async def test_worker_killed_mid_generation_is_an_error_then_a_new_worker_serves(
        tiny_models, start_worker, async_client):
    endpoint = await sync_to_async(make_endpoint)(tiny_models["slow"], max_output_tokens=400)
    worker = await sync_to_async(start_worker)(queues="cpu")
    engine = await engine_for(endpoint.pk)
    got, started = 0, time.monotonic()

    with pytest.raises(ConnectionFailed, match="stopped answering"):
        async for _delta in engine.stream(ChatRequest(messages=PROMPT, max_tokens=400)):
            got += 1
            if got == 3:
                worker.kill()
                killed_at = time.monotonic()

    assert time.monotonic() - killed_at < LIVENESS_S + 2  # well within the 120 s timeout
    assert await health_of(endpoint.pk) == "unhealthy"
    assert (await async_client.get("/readyz")).status_code == 200

    await sync_to_async(start_worker)(queues="cpu")
    text = (await collect(await engine_for(endpoint.pk), max_tokens=5)).text
    assert text
    assert await health_of(endpoint.pk) == "healthy"
    assert time.monotonic() - started < 90


async def test_broken_model_folder_fails_that_endpoint_only(tiny_models, start_worker,
                                                            tmp_path):
    (tmp_path / "config.json").write_text("{ not json")
    broken = await sync_to_async(make_endpoint)(tmp_path, name="broken")
    good = await sync_to_async(make_endpoint)(tiny_models["a"], name="good")
    await sync_to_async(start_worker)(queues="cpu")

    with pytest.raises(EngineUnavailable):
        await collect(await engine_for(broken.pk))

    text = (await collect(await engine_for(good.pk))).text
    assert text
    assert await health_of(broken.pk) == "unhealthy"
    assert await health_of(good.pk) == "healthy"


async def test_generation_past_its_total_timeout_is_stopped_and_reported(
        tiny_models, start_worker):
    endpoint = await sync_to_async(make_endpoint)(
        tiny_models["slow"], max_output_tokens=400, first_byte_timeout=30, total_timeout=31)
    await sync_to_async(start_worker)(queues="cpu")
    await collect(await engine_for(endpoint.pk), max_tokens=2)  # loaded and warm
    # 400 tokens of the slow model take several seconds on this CPU
    await ModelEndpoint.objects.filter(pk=endpoint.pk).aupdate(first_byte_timeout=1.5,
                                                               total_timeout=2.0)

    started = time.monotonic()
    with pytest.raises(EngineTimeout) as caught:
        await collect(await engine_for(endpoint.pk), max_tokens=400)

    assert caught.value.phase == "total"
    assert time.monotonic() - started < 4
    assert await health_of(endpoint.pk) == "unhealthy"


async def test_no_worker_on_the_gpu_queue_times_out_at_first_byte(tiny_models, start_worker):
    endpoint = await sync_to_async(make_endpoint)(tiny_models["a"], gpu_id=0,
                                                  first_byte_timeout=1.0)
    await sync_to_async(start_worker)(queues="cpu")  # no gpu worker anywhere

    with pytest.raises(EngineTimeout) as caught:
        await collect(await engine_for(endpoint.pk))

    assert caught.value.phase == "first_byte"
    assert "no worker took the request" in str(caught.value)


async def test_warm_endpoints_load_at_worker_start_and_disabled_ones_unload(
        tiny_models, start_worker):
    from inference.tasks import pool_status

    def loaded() -> dict:
        return pool_status.apply_async(queue="cpu").get(timeout=10)["loaded"]

    async def wait_for(predicate) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if predicate(await sync_to_async(loaded)()):
                return True
            await asyncio.sleep(0.2)
        return False

    warm = await sync_to_async(make_endpoint)(tiny_models["a"], name="warm", warm=True)
    await sync_to_async(make_endpoint)(tiny_models["b"], name="cold")
    await sync_to_async(start_worker)(queues="cpu")

    # loaded without a request; the cold one is not
    assert await wait_for(lambda held: held == {str(warm.pk): "transformers"})

    await ModelEndpoint.objects.filter(pk=warm.pk).aupdate(enabled=False)
    assert await wait_for(lambda held: held == {})


# The worker builds these messages (inference.engines.transformers, …_batching): the
# Chinese catalogue must translate both msgids for the test below.
CONTEXT_MSGID = ("%(model)s: %(prompt)d prompt tokens + max_tokens %(max_tokens)d exceed "
                 "the context window of %(window)d tokens")
TOP_P_MSGID = "top_p must be in (0, 1], not %(value)s"


def translated(language: str, msgid: str, values: dict) -> str:
    with translation.override(language):
        return translation.gettext(msgid) % values


async def refusal(engine, exception, language: str, **request) -> str:
    with translation.override(language), pytest.raises(exception) as caught:
        async for _delta in engine.stream(ChatRequest(messages=PROMPT, **request)):
            pass
    return caught.value.message


async def test_worker_side_errors_come_back_in_the_callers_language(tiny_models,
                                                                    start_worker):
    # given: a window the prompt and max_tokens overflow, checked in the worker
    endpoint = await sync_to_async(make_endpoint)(tiny_models["a"], context_window=8)
    await sync_to_async(start_worker)(queues="cpu")
    engine = await engine_for(endpoint.pk)

    # when: the same refusals, asked in English and in 中文
    english = await refusal(engine, ContextTooLong, "en", max_tokens=16)
    chinese = await refusal(engine, ContextTooLong, "zh-hans", max_tokens=16)
    english_top_p = await refusal(engine, BadRequest, "en", max_tokens=1, top_p=5.0)
    chinese_top_p = await refusal(engine, BadRequest, "zh-hans", max_tokens=1, top_p=5.0)

    # then: each in the caller's language, the worker's own being English
    prompt = int(re.search(r": (\d+) prompt tokens", english).group(1))
    values = {"model": "tiny", "prompt": prompt, "max_tokens": 16, "window": 8}
    assert english == CONTEXT_MSGID % values
    assert chinese == translated("zh-hans", CONTEXT_MSGID, values)
    assert chinese != english  # the catalogue has it in Chinese
    assert english_top_p == TOP_P_MSGID % {"value": 5.0}
    assert chinese_top_p == translated("zh-hans", TOP_P_MSGID, {"value": 5.0})
    assert chinese_top_p != english_top_p
