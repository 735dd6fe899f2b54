"""The onnx engine, on a tiny Llama built and exported to ONNX on the spot."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from inference.engines.base import ChatRequest, EndpointConfig
from inference.engines.onnx import OnnxEngine, _prompt_ids
from inference.errors import ContextTooLong, EngineUnavailable
from inference.onnx_export import export_to_onnx, main
from inference.registry import build_local_engine, engine_class
from tests.tiny_models import build_tiny_llama

ENGLISH = [{"role": "user", "content": "Hello world, tell me about the quick brown fox."}]
CHINESE = [{"role": "system", "content": "Tokens stream back."},
           {"role": "user", "content": "你好，世界。"}]
SHARPEN = 10.0


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """The tiny Llama with its weights scaled up.

    At their random initial scale the logits are nearly flat and greedy decoding
    repeats one token whatever the prompt; sharper weights make every step's
    choice depend on the prompt and the tokens before it, so matching
    transformers token for token proves the export, the cache and the loop.
    """
    import torch
    from transformers import AutoModelForCausalLM

    folder = build_tiny_llama(tmp_path_factory.mktemp("tiny-hf"))
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "norm" not in name:
                weight.mul_(SHARPEN)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def onnx_folder(hf_folder: Path, tmp_path_factory) -> Path:
    return export_to_onnx(hf_folder, tmp_path_factory.mktemp("tiny-onnx"))


def onnx_engine(folder: Path | str, **fields) -> OnnxEngine:
    return build_local_engine(EndpointConfig(id=None, name="tiny-onnx", engine="onnx",
                                             path=str(folder), **fields))


async def collect(engine, **fields):
    messages = fields.pop("messages", ENGLISH)
    return [d async for d in engine.stream(ChatRequest(messages=messages, **fields))]


def transformers_greedy(hf_folder: Path, messages, max_new_tokens: int) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_folder)
    model = AutoModelForCausalLM.from_pretrained(hf_folder)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)
    return tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True)


def test_onnx_engine_is_registered_to_run_in_a_worker():
    assert engine_class("onnx") is OnnxEngine
    assert OnnxEngine.runs_in == "worker"


def test_export_writes_the_graph_tokenizer_and_config(onnx_folder: Path):
    from transformers import AutoTokenizer

    assert {"model.onnx", "config.json", "tokenizer.json"} <= {
        p.name for p in onnx_folder.iterdir()}
    assert AutoTokenizer.from_pretrained(onnx_folder).chat_template


async def test_stream_yields_token_deltas_before_the_final_one(onnx_folder: Path):
    deltas = await collect(onnx_engine(onnx_folder), max_tokens=12)

    *pieces, last = deltas
    assert len(pieces) >= 3
    assert all(d.text and d.tokens >= 1 and d.finish_reason is None for d in pieces)
    assert last.finish_reason == "length"
    assert last.usage.completion_tokens == 12
    assert sum(d.tokens for d in deltas) == 12
    assert last.usage.prompt_tokens > 5


@pytest.mark.parametrize("messages", [ENGLISH, CHINESE], ids=["english", "chinese"])
async def test_greedy_output_equals_transformers_generate(onnx_folder, hf_folder, messages):
    # given
    expected = transformers_greedy(hf_folder, messages, 24)

    # when
    deltas = await collect(onnx_engine(onnx_folder), messages=messages, max_tokens=24)

    # then: the same text, streamed in complete characters only
    text = "".join(d.text for d in deltas)
    assert text == expected.removesuffix("\ufffd")
    assert not any(d.text.endswith("\ufffd") for d in deltas)


async def test_a_graph_without_cache_gives_the_same_answer(onnx_folder, hf_folder, tmp_path):
    # given: the plain graph, written by the operators' command
    main(["--no-cache", str(hf_folder), str(tmp_path)])

    # when
    plain = await collect(onnx_engine(tmp_path), max_tokens=10)
    cached = await collect(onnx_engine(onnx_folder), max_tokens=10)

    # then
    assert [d.text for d in plain] == [d.text for d in cached]


async def test_stop_string_ends_the_answer_before_it(onnx_folder: Path):
    engine = onnx_engine(onnx_folder)
    full = "".join(d.text for d in await collect(engine, max_tokens=16))
    stop = full[6:9]

    deltas = await collect(engine, max_tokens=16, stop=[stop])

    text = "".join(d.text for d in deltas)
    assert text == full[:full.index(stop)]
    assert deltas[-1].finish_reason == "stop"


async def test_sampling_is_repeatable_with_a_seed(onnx_folder: Path):
    engine = onnx_engine(onnx_folder)

    def text(deltas) -> str:
        return "".join(d.text for d in deltas)

    first = text(await collect(engine, max_tokens=16, temperature=1.0, top_p=0.9, seed=7))
    again = text(await collect(engine, max_tokens=16, temperature=1.0, top_p=0.9, seed=7))
    other = text(await collect(engine, max_tokens=16, temperature=1.0, seed=8,
                              extra={"top_k": 20}))

    assert first == again
    assert first != other


async def test_cancel_stops_the_request_at_the_next_step(onnx_folder: Path):
    engine = onnx_engine(onnx_folder)
    stream = engine.stream(ChatRequest(messages=ENGLISH, max_tokens=200, request_id="r-1"))
    seen = [await anext(stream) for _ in range(3)]

    await engine.cancel("r-1")
    rest = [d async for d in stream]

    assert rest[-1].finish_reason == "cancelled"
    assert rest[-1].usage.completion_tokens == sum(d.tokens for d in seen + rest[:-1]) < 200


async def test_concurrent_requests_each_get_their_own_answer(onnx_folder: Path):
    engine = onnx_engine(onnx_folder)

    english, chinese = await asyncio.gather(collect(engine, max_tokens=10),
                                            collect(engine, messages=CHINESE, max_tokens=10))

    assert [d.text for d in english] == [d.text for d in await collect(engine, max_tokens=10)]
    assert [d.text for d in chinese] == [
        d.text for d in await collect(engine, messages=CHINESE, max_tokens=10)]


async def test_missing_folder_is_unavailable_naming_it(tmp_path: Path):
    folder = tmp_path / "nowhere"

    with pytest.raises(EngineUnavailable, match=str(folder)):
        await onnx_engine(folder).load()


async def test_folder_without_an_onnx_file_is_unavailable_naming_it(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")

    with pytest.raises(EngineUnavailable, match=f"{tmp_path}.*no .onnx file"):
        await onnx_engine(tmp_path).load()


async def test_prompt_longer_than_the_context_window_is_context_too_long(onnx_folder: Path):
    with pytest.raises(ContextTooLong):
        await collect(onnx_engine(onnx_folder, context_window=8))


async def test_answer_is_cut_at_the_context_window_with_length(onnx_folder: Path):
    engine = onnx_engine(onnx_folder, context_window=30)

    deltas = await collect(engine, max_tokens=100)

    usage = deltas[-1].usage
    assert deltas[-1].finish_reason == "length"
    assert usage.prompt_tokens + usage.completion_tokens == 30


async def test_gpu_without_cuda_provider_is_unavailable(onnx_folder: Path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")

    with pytest.raises(EngineUnavailable, match="onnxruntime-gpu"):
        await onnx_engine(onnx_folder, gpu_id=0).load()


async def test_aclose_drops_the_session_and_a_later_stream_reloads(onnx_folder: Path):
    engine = onnx_engine(onnx_folder)
    before = await collect(engine, max_tokens=4)

    await engine.aclose()

    assert engine._model is None
    assert [d.text for d in await collect(engine, max_tokens=4)] == [d.text for d in before]


async def test_tools_are_written_into_the_prompt_with_the_endpoints_tool_format(
        onnx_folder: Path):
    from transformers import AutoTokenizer

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    tokenizer = AutoTokenizer.from_pretrained(onnx_folder)
    prompt = _prompt_ids(tokenizer, ENGLISH, "llama3_json", tools)

    [*_, last] = await collect(onnx_engine(onnx_folder, tool_format="llama3_json"),
                               max_tokens=3, extra={"tools": tools})

    assert '"name": "get_weather"' in tokenizer.decode(prompt)
    assert last.usage.prompt_tokens == len(prompt)
    assert last.finish_reason == "length"
