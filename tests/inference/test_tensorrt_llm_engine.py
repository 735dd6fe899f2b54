"""The tensorrt_llm engine.

TensorRT-LLM needs an NVIDIA GPU, which these machines do not have, so every
test here but the last runs the engine against the stand-in package in
``tests/stand_ins/tensorrt_llm`` (the documented LLM API surface, recording
its calls). ``test_real_tensorrt_llm_on_gpu`` runs it on the real library and
is skipped unless a GPU, TensorRT-LLM and ``OPENCLAW_TRTLLM_TEST_MODEL`` are
all there.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inference.engines.base import ChatRequest, EndpointConfig
from inference.engines.tensorrt_llm import TensorRTLLMEngine
from inference.errors import ContextTooLong, EngineUnavailable, ServerError
from inference.registry import build_local_engine, engine_class

STAND_INS = Path(__file__).resolve().parents[1] / "stand_ins"
HELLO = [{"role": "user", "content": "hello there world"}]


@pytest.fixture
def trtllm(monkeypatch, tmp_path):
    """The stand-in ``tensorrt_llm``, first on sys.path, with no GPU pinned yet."""
    monkeypatch.syspath_prepend(str(STAND_INS))
    monkeypatch.delitem(sys.modules, "tensorrt_llm", raising=False)
    # setenv first so that the undo removes what the engine sets in os.environ.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    module = importlib.import_module("tensorrt_llm")
    assert module.STAND_IN
    yield module
    sys.modules.pop("tensorrt_llm", None)


def trt_engine(path: Path | str = "/models/tiny", **fields) -> TensorRTLLMEngine:
    fields.setdefault("gpu_id", 0)
    return build_local_engine(EndpointConfig(id=None, name="trt", engine="tensorrt_llm",
                                             path=str(path), **fields))


async def collect(engine, **fields):
    messages = fields.pop("messages", HELLO)
    return [d async for d in engine.stream(ChatRequest(messages=messages, **fields))]


def test_tensorrt_llm_engine_is_registered_to_run_in_a_worker():
    assert engine_class("tensorrt_llm") is TensorRTLLMEngine
    assert TensorRTLLMEngine.runs_in == "worker"


async def test_llm_is_built_once_with_the_model_folder_and_llm_args(trtllm):
    engine = trt_engine("/models/llama", params={"llm_args": {"max_batch_size": 4}})

    await collect(engine)
    await collect(engine)

    [llm] = trtllm.instances
    assert llm.model == "/models/llama"
    assert llm.kwargs == {"max_batch_size": 4}
    assert len(llm.requests) == 2


async def test_sampling_params_always_carry_max_tokens(trtllm):
    await collect(trt_engine(max_output_tokens=300))

    params = trtllm.instances[0].requests[0].sampling_params
    assert params.max_tokens == 300  # not the library's default of 32
    assert params.temperature is None and params.seed is None


async def test_sampling_params_get_the_request_values(trtllm):
    await collect(trt_engine(), max_tokens=7, temperature=0.3, top_p=0.8, seed=5, stop=["zz"],
                  extra={"top_k": 12})

    params = trtllm.instances[0].requests[0].sampling_params
    assert params == trtllm.SamplingParams(max_tokens=7, temperature=0.3, top_p=0.8, top_k=12,
                                           seed=5, stop=["zz"])


async def test_endpoint_params_are_the_sampling_defaults(trtllm):
    await collect(trt_engine(params={"temperature": 0.6, "top_k": 40}), temperature=None)

    params = trtllm.instances[0].requests[0].sampling_params
    assert (params.temperature, params.top_k) == (0.6, 40)


async def test_prompt_comes_from_the_tokenizers_chat_template(trtllm):
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]}]

    await collect(trt_engine(), messages=messages)

    llm = trtllm.instances[0]
    [call] = llm.tokenizer.calls
    assert (call["tokenize"], call["add_generation_prompt"]) == (False, True)
    assert call["conversation"][1]["content"] == "hi"  # content parts joined
    assert llm.requests[0].prompt == "<|system|>be brief\n<|user|>hi\n<|assistant|>"


async def test_deltas_stream_from_text_diff_one_by_one(trtllm):
    engine = trt_engine()
    stream = engine.stream(ChatRequest(messages=HELLO))

    first = await anext(stream)
    running = trtllm.instances[0].requests[0]
    assert first.text == "hello" and not running.finished  # yielded as produced
    rest = [d async for d in stream]

    assert [first.text] + [d.text for d in rest[:-1]] == ["hello", " there", " world"]
    assert all(d.tokens == 1 for d in [first, *rest[:-1]])
    last = rest[-1]
    assert last.finish_reason == "stop"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        len(running.prompt_token_ids), 3)


async def test_max_tokens_reached_finishes_with_length(trtllm):
    completion = await trt_engine().generate(ChatRequest(messages=HELLO, max_tokens=2))

    assert completion.text == "hello there"
    assert completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 2


async def test_gpu_is_pinned_with_cuda_visible_devices(trtllm):
    await trt_engine(gpu_id=3).load()

    assert trtllm.instances[0].cuda_visible_devices == "3"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"


async def test_worker_pinned_to_another_gpu_is_unavailable(trtllm, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")

    with pytest.raises(EngineUnavailable, match="one worker per GPU"):
        await trt_engine(gpu_id=0).load()
    assert trtllm.instances == []


async def test_endpoint_without_gpu_id_is_unavailable(trtllm):
    with pytest.raises(EngineUnavailable, match="gpu_id"):
        await trt_engine(gpu_id=None).load()


async def test_cancel_aborts_the_request_and_ends_the_stream(trtllm):
    engine = trt_engine()
    long = [{"role": "user", "content": " ".join(f"w{i}" for i in range(200))}]
    stream = engine.stream(ChatRequest(messages=long, request_id="r-9"))
    seen = [await anext(stream) for _ in range(2)]

    await engine.cancel("r-9")
    rest = [d async for d in stream]

    running = trtllm.instances[0].requests[0]
    assert trtllm.instances[0].aborts == [running]
    assert rest[-1].finish_reason == "cancelled"
    assert len(seen) + len(rest) < 10


async def test_a_stream_the_caller_abandons_is_aborted(trtllm):
    engine = trt_engine()
    stream = engine.stream(ChatRequest(messages=HELLO))
    await anext(stream)

    await stream.aclose()

    assert trtllm.instances[0].aborts == trtllm.instances[0].requests


async def test_aclose_shuts_the_llm_down(trtllm):
    engine = trt_engine()
    await engine.load()

    await engine.aclose()

    assert trtllm.instances[0].shutdowns == 1


async def test_prompt_over_the_context_window_is_context_too_long(trtllm):
    engine = trt_engine(context_window=3)

    with pytest.raises(ContextTooLong):
        await collect(engine)
    assert trtllm.instances[0].aborts == trtllm.instances[0].requests


async def test_library_failure_is_a_server_error(trtllm):
    engine = trt_engine()
    await engine.load()
    trtllm.instances[0].shutdown()  # the stand-in then refuses requests, with RuntimeError

    with pytest.raises(ServerError, match="shut down"):
        await collect(engine)


async def test_missing_package_is_unavailable_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # makes the import fail
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")

    with pytest.raises(EngineUnavailable, match=r"pip install -e '\.\[gpu\]'"):
        await trt_engine().load()


# -- tool calls ---------------------------------------------------------------------------

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}
# The stand-in answers with the words of its prompt: a call in the question comes back.
ASKS_FOR_A_CALL = [{"role": "user", "content": 'Weather? <tool_call>{"name": "get_weather", '
                                               '"arguments": {"city": "Paris"}}</tool_call>'}]


async def test_tools_reach_the_chat_template_and_the_call_comes_back_as_a_tool_call(trtllm):
    engine = trt_engine(tool_format="hermes")
    request = ChatRequest(messages=ASKS_FOR_A_CALL, extra={"tools": [WEATHER_TOOL]})

    deltas = [d async for d in engine.stream(request)]

    [call] = trtllm.instances[0].tokenizer.calls
    assert call["tools"] == [WEATHER_TOOL]
    assert "<tools>" in call["chat_template"]  # the stand-in's template knows no tools
    assert "".join(d.text for d in deltas) == "Weather?"
    [fragment] = [c for d in deltas for c in d.tool_calls or []]
    assert (fragment["index"], fragment["function"]) == (
        0, {"name": "get_weather", "arguments": '{"city": "Paris"}'})
    assert deltas[-1].finish_reason == "tool_calls"
    assert deltas[-1].usage.completion_tokens == 6


async def test_without_a_tool_format_the_call_is_only_text(trtllm):
    completion = await trt_engine().generate(ChatRequest(messages=ASKS_FOR_A_CALL))

    assert completion.tool_calls is None and "<tool_call>" in completion.text
    assert "tools" not in trtllm.instances[0].tokenizer.calls[0]


# -- the real library ---------------------------------------------------------------------


def _real_tensorrt_llm_or_skip() -> None:
    if shutil.which("nvidia-smi") is None or subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, timeout=60).returncode != 0:
        pytest.skip("no NVIDIA GPU (nvidia-smi does not work)")
    probe = subprocess.run([sys.executable, "-c", "import tensorrt_llm"], capture_output=True,
                           timeout=600)  # in a child: importing it starts CUDA
    if probe.returncode != 0:
        pytest.skip("TensorRT-LLM is not installed (pip install -e '.[gpu]')")
    if not os.environ.get("OPENCLAW_TRTLLM_TEST_MODEL"):
        pytest.skip("set OPENCLAW_TRTLLM_TEST_MODEL to a model folder to run TensorRT-LLM")


@pytest.mark.gpu
async def test_real_tensorrt_llm_on_gpu(monkeypatch):
    """The engine on the real TensorRT-LLM (not the stand-in), on the first visible GPU."""
    _real_tensorrt_llm_or_skip()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
    monkeypatch.delitem(sys.modules, "tensorrt_llm", raising=False)
    engine = trt_engine(os.environ["OPENCLAW_TRTLLM_TEST_MODEL"], gpu_id=int(visible))
    try:
        deltas = await asyncio.wait_for(
            collect(engine, messages=[{"role": "user", "content": "Say hello."}],
                    max_tokens=16, temperature=0), timeout=900)
    finally:
        await engine.aclose()

    *pieces, last = deltas
    assert "".join(d.text for d in pieces).strip()
    assert last.finish_reason in {"stop", "length"}
    assert 0 < last.usage.completion_tokens <= 16
    assert last.usage.prompt_tokens > 0
