"""The transformers engine, in process, on a tiny Llama built on disk for this module.

The worker-process path (Celery, the engine pool) is tested with the pool;
here the engine object is driven directly: streaming, batching, cancelling,
failures and loading errors.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from django.utils import translation

from inference.engines.base import ChatRequest, EndpointConfig
from inference.engines.transformers import TransformersEngine
from inference.engines.transformers_batching import Detokenizer
from inference.errors import ContextTooLong, EngineUnavailable, ServerError
from inference.registry import engine_class
from tests.tiny_models import build_tiny_llama

REPO = Path(__file__).resolve().parents[2]
# Prompts on which the tiny model babbles whole characters (others give stray bytes).
PROMPTS = ["The quick brown fox", "Hello world", "Tokens stream back",
           "OpenClaw routes every request to the right model."]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
async def make_engine(tiny_model: Path):
    """Loaded engines on the tiny model (``params`` and config overrides), closed after."""
    engines: list[TransformersEngine] = []

    async def make(path: Path | None = None, **overrides) -> TransformersEngine:
        config = EndpointConfig(id=None, name="tiny", engine="transformers",
                                path=str(path or tiny_model), **overrides)
        engine = TransformersEngine(config)
        engines.append(engine)
        await engine.load()
        return engine

    yield make
    for engine in engines:
        await engine.aclose()


def ask(content: str, **fields) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": content}], **fields)


async def test_streamed_text_arrives_token_by_token_and_equals_generate(make_engine):
    engine = await make_engine()

    deltas = [d async for d in engine.stream(ask(PROMPTS[0], max_tokens=24, seed=7))]
    completion = await engine.generate(ask(PROMPTS[0], max_tokens=24, seed=7))

    assert len(deltas) > 5
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert "".join(d.text for d in deltas) == completion.text
    assert sum(d.tokens for d in deltas) == 24
    assert deltas[-1].usage.completion_tokens == 24


async def test_greedy_text_matches_transformers_own_generate(make_engine):
    import torch

    engine = await make_engine()
    prompt = engine.prompt_ids(ask(PROMPTS[1]).messages)

    completion = await engine.generate(ask(PROMPTS[1], max_tokens=20))

    with torch.inference_mode():
        expected = engine._model.generate(torch.tensor([prompt]), max_new_tokens=20,
                                          do_sample=False)
    assert completion.text == engine._tokenizer.decode(expected[0, len(prompt):],
                                                       skip_special_tokens=True)


async def test_max_tokens_is_respected_with_finish_reason_length(make_engine):
    engine = await make_engine(params={"max_tokens": 50})

    completion = await engine.generate(ask(PROMPTS[2], max_tokens=5))

    assert completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 5


async def test_four_concurrent_requests_run_in_one_batch_each_with_its_own_answer(make_engine):
    engine = await make_engine(params={"batch_wait_ms": 50})
    solo = [(await engine.generate(ask(p, max_tokens=16))).text for p in PROMPTS]
    engine.stats.sizes.clear()

    async def collect(prompt: str) -> list[str]:
        return [d.text async for d in engine.stream(ask(prompt, max_tokens=16))]

    streams = await asyncio.gather(*(collect(p) for p in PROMPTS))

    assert list(engine.stats.sizes) == [4]
    # Left padding under the attention mask: greedy answers match the unbatched ones.
    assert ["".join(pieces) for pieces in streams] == solo
    assert all(len(pieces) > 3 for pieces in streams)


async def test_requests_arriving_mid_batch_go_together_into_the_next_one(make_engine):
    engine = await make_engine(params={"batch_wait_ms": 20})
    first = engine.stream(ask(PROMPTS[0], max_tokens=150))
    await anext(first)  # the first batch is running

    async def rest_of_first() -> str:
        return "".join([d.finish_reason or "" async for d in first])

    *later, first_end = await asyncio.gather(
        *(engine.generate(ask(p, max_tokens=4)) for p in PROMPTS[1:]), rest_of_first())

    assert list(engine.stats.sizes) == [1, 3]
    assert first_end == "length"
    assert all(c.finish_reason == "length" for c in later)


async def test_batching_off_generates_requests_one_at_a_time(make_engine):
    engine = await make_engine(params={"batching": False})

    answers = await asyncio.gather(*(engine.generate(ask(p, max_tokens=8)) for p in PROMPTS))

    assert list(engine.stats.sizes) == [1, 1, 1, 1]
    assert all(a.usage.completion_tokens == 8 for a in answers)


async def test_cancel_stops_one_request_while_the_others_finish(make_engine):
    engine = await make_engine(params={"batch_wait_ms": 50})

    async def run(prompt: str, request_id: str) -> tuple[str | None, int]:
        deltas = []
        async for delta in engine.stream(ask(prompt, max_tokens=200, request_id=request_id)):
            deltas.append(delta)
            if request_id == "b" and len(deltas) == 3:
                await engine.cancel("b")
        return deltas[-1].finish_reason, deltas[-1].usage.completion_tokens

    results = await asyncio.gather(*(run(p, rid) for p, rid in zip(PROMPTS, "abc", strict=False)))

    assert list(engine.stats.sizes) == [3]
    assert results[0] == ("length", 200) and results[2] == ("length", 200)
    assert results[1][0] == "cancelled" and results[1][1] < 200
    assert engine.stats.dropped == 1


async def test_cancelling_a_waiting_request_answers_at_once(make_engine):
    engine = await make_engine(params={"batching": False})
    running = engine.stream(ask(PROMPTS[0], max_tokens=300))
    await anext(running)
    waiting = engine.stream(ask(PROMPTS[1], max_tokens=300, request_id="w"))
    waiting_first = asyncio.ensure_future(anext(waiting))
    await asyncio.sleep(0.01)  # it is queued behind the running one

    await engine.cancel("w")
    last = await asyncio.wait_for(waiting_first, 1)

    assert (last.finish_reason, last.usage.completion_tokens) == ("cancelled", 0)
    assert list(engine.stats.sizes) == [1]  # the running request still has the engine
    await running.aclose()


async def test_a_consumer_that_stops_reading_frees_its_row(make_engine):
    engine = await make_engine(params={"batch_wait_ms": 50})
    quitter = engine.stream(ask(PROMPTS[0], max_tokens=200))

    async def read_two_and_leave() -> None:
        for _ in range(2):
            await anext(quitter)
        await quitter.aclose()

    _, finished = await asyncio.gather(read_two_and_leave(),
                                       engine.generate(ask(PROMPTS[1], max_tokens=200)))

    assert list(engine.stats.sizes) == [2]
    assert finished.finish_reason == "length"
    assert engine.stats.dropped == 1


async def test_a_failing_forward_pass_fails_its_batch_and_the_engine_recovers(
        make_engine, monkeypatch):
    engine = await make_engine(params={"batch_wait_ms": 50})
    forward, calls = engine._model.forward, []

    def breaks_at_step_four(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("CUDA out of memory (simulated)")
        return forward(*args, **kwargs)

    monkeypatch.setattr(engine._model, "forward", breaks_at_step_four)

    async def collect(prompt: str) -> list[str]:
        return [d.text async for d in engine.stream(ask(prompt, max_tokens=30))]

    results = await asyncio.gather(*(collect(p) for p in PROMPTS[:2]), return_exceptions=True)

    assert all(isinstance(r, ServerError) and "out of memory" in r.message for r in results)
    assert (await engine.generate(ask(PROMPTS[0], max_tokens=6))).usage.completion_tokens == 6


async def test_a_failed_batch_tells_each_request_in_its_own_language(make_engine,
                                                                      monkeypatch):
    # given: two requests, one asked in 中文, batched together, and a forward pass that fails
    engine = await make_engine(params={"batch_wait_ms": 50})
    forward, calls = engine._model.forward, []

    def breaks_at_step_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return forward(*args, **kwargs)

    monkeypatch.setattr(engine._model, "forward", breaks_at_step_two)

    async def collect(prompt: str, language: str) -> list[str]:
        with translation.override(language):
            return [d.text async for d in engine.stream(ask(prompt, max_tokens=30))]

    # when
    chinese, english = await asyncio.gather(collect(PROMPTS[0], "zh-hans"),
                                            collect(PROMPTS[1], "en"), return_exceptions=True)

    # then: one batch, its failure told to each request in that request's language
    msgid = "local generation failed: %(error)s"
    values = {"error": "RuntimeError: CUDA out of memory (simulated)"}
    with translation.override("zh-hans"):
        expected = translation.gettext(msgid) % values
    assert list(engine.stats.sizes) == [2]
    assert isinstance(english, ServerError) and english.message == msgid % values
    assert isinstance(chinese, ServerError) and chinese.message == expected
    assert chinese.message != english.message  # needs the msgid in the Chinese catalogue


async def test_missing_folder_is_engine_unavailable_naming_the_folder(make_engine, tmp_path):
    missing = tmp_path / "no-such-model"

    with pytest.raises(EngineUnavailable, match="no-such-model"):
        await make_engine(path=missing)


async def test_broken_folder_is_engine_unavailable_saying_what_is_wrong(make_engine, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")

    with pytest.raises(EngineUnavailable, match="cannot load the model in .*broken-model"):
        await make_engine(path=broken)


async def test_gpu_id_without_cuda_is_engine_unavailable(make_engine):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(EngineUnavailable, match="CUDA is not available"):
        await make_engine(gpu_id=0)


async def test_prompt_plus_max_tokens_over_the_window_is_context_too_long(make_engine):
    engine = await make_engine(context_window=64)

    with pytest.raises(ContextTooLong, match="context window of 64"):
        await engine.generate(ask("hello " * 10, max_tokens=60))


async def test_chat_template_builds_the_prompt(make_engine):
    engine = await make_engine()
    user_token = engine._tokenizer.convert_tokens_to_ids("<|user|>")
    assistant_token = engine._tokenizer.convert_tokens_to_ids("<|assistant|>")

    prompt = engine.prompt_ids(ask("hello").messages)
    completion = await engine.generate(ask("hello", max_tokens=2))

    assert prompt[0] == user_token and prompt[-1] == assistant_token
    assert completion.usage.prompt_tokens == len(prompt)


async def test_without_a_chat_template_the_prompt_is_role_lines(make_engine):
    engine = await make_engine()
    engine._tokenizer.chat_template = None

    prompt = engine.prompt_ids([{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "hello"}])

    assert engine._tokenizer.decode(prompt) == "system: be brief\nuser: hello\nassistant:"


async def test_stop_string_ends_the_answer_before_it(make_engine):
    engine = await make_engine(params={"temperature": 1.0, "seed": 1})
    full = (await engine.generate(ask(PROMPTS[0], max_tokens=30))).text
    start = next(i for i in range(8, len(full) - 3) if "\ufffd" not in full[i:i + 3])
    stop = full[start:start + 3]

    deltas = [d async for d in engine.stream(ask(PROMPTS[0], max_tokens=30, stop=[stop]))]

    assert "".join(d.text for d in deltas) == full[:full.index(stop)]
    assert deltas[-1].finish_reason == "stop"


async def test_seeded_sampling_repeats_in_a_batch_and_top_k_1_is_greedy(make_engine):
    engine = await make_engine(params={"batch_wait_ms": 50, "temperature": 1.0})
    greedy = (await engine.generate(ask(PROMPTS[0], max_tokens=12, temperature=0))).text
    alone = (await engine.generate(ask(PROMPTS[0], max_tokens=12, seed=3))).text

    batched, top1 = await asyncio.gather(
        engine.generate(ask(PROMPTS[0], max_tokens=12, seed=3)),
        engine.generate(ask(PROMPTS[0], max_tokens=12, extra={"top_k": 1}, top_p=0.9)))

    assert batched.text == alone
    assert top1.text == greedy


def test_detokenizer_emits_multibyte_characters_only_when_complete(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ids = tokenizer.encode("日本語のテキスト ✓ 😀")  # not in the training corpus: byte tokens
    detokenizer = Detokenizer(lambda window: tokenizer.decode(window))

    pieces = [detokenizer.push(token) for token in ids] + [detokenizer.flush()]

    assert "".join(pieces) == tokenizer.decode(ids)
    assert not any("\ufffd" in piece for piece in pieces)
    assert pieces.count("") > 1  # some tokens held half a character


async def test_closed_engine_refuses_new_requests(make_engine):
    engine = await make_engine()
    await engine.aclose()

    with pytest.raises(EngineUnavailable, match="closed"):
        await engine.generate(ask("hello", max_tokens=2))
    assert engine._model is None


async def test_closing_mid_batch_fails_its_requests_instead_of_hanging(make_engine):
    engine = await make_engine(params={"batch_wait_ms": 50})
    streams = [engine.stream(ask(p, max_tokens=400)) for p in PROMPTS[:2]]

    async def read_all(stream) -> None:
        async for _ in stream:
            pass

    await asyncio.gather(*(anext(stream) for stream in streams))  # the batch is running
    reading = [asyncio.create_task(read_all(stream)) for stream in streams]
    await engine.aclose()
    results = await asyncio.wait_for(asyncio.gather(*reading, return_exceptions=True), 5)

    assert all(isinstance(r, EngineUnavailable) and "closed" in r.message for r in results)


def test_registered_as_a_worker_kind_without_importing_torch():
    code = ("import sys, inference.engines.transformers as t; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
            "print(t.TransformersEngine.runs_in)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, check=True)

    assert result.stdout.strip() == "worker"
    assert engine_class("transformers") is TransformersEngine


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}


async def test_tools_are_written_into_the_prompt_with_the_endpoints_tool_format(make_engine):
    engine = await make_engine(tool_format="hermes")
    request = ask("Weather in Paris?", max_tokens=3, extra={"tools": [WEATHER_TOOL]})

    prompt = engine.prompt_ids(request.messages, [WEATHER_TOOL])
    completion = await engine.generate(request)

    text = engine._tokenizer.decode(prompt)
    assert '<tools>\n{"name": "get_weather", "parameters"' in text
    assert text.endswith("<|im_start|>user\nWeather in Paris?<|im_end|>\n"
                         "<|im_start|>assistant\n")
    assert completion.usage.prompt_tokens == len(prompt)  # the tools reached the model
    assert completion.tool_calls is None  # the tiny model babbles: text, no call
    assert completion.finish_reason == "length"
