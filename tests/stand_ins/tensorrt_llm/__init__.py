"""A STAND-IN for TensorRT-LLM, not the real library.

TensorRT-LLM has no CPU mode and the machines these tests run on have no
NVIDIA GPU, so ``tests/inference/test_tensorrt_llm_engine.py`` puts
``tests/stand_ins`` first on ``sys.path`` and the engine imports this package
instead. It implements exactly the documented part of TensorRT-LLM 1.2's LLM
API that the engine uses (the project's DESIGN.md, "Platform facts"), and
nothing more, so that a use of anything else fails here:

    LLM(model=..., **kwargs)          .tokenizer.apply_chat_template(...)
    llm.generate(prompts, sp)         llm.generate_async(prompt, sp, streaming=True)
    llm.shutdown()                    SamplingParams(max_tokens=32, temperature, top_p,
                                                     top_k, seed, stop)
    RequestOutput: async-iterable; .prompt_token_ids, .finished, .abort(),
                   .outputs[0].text (cumulative), .text_diff, .token_ids, .finish_reason

The "model" answers with the words of the prompt (chat markers left out), one
word per token, ``TOKEN_DELAY_S`` apart, then finishes with "stop" ("length"
at max_tokens; a stop string cuts the text before it, "stop"). After
``abort()`` the next output is the last, with finish_reason "cancelled".

Every LLM built is appended to ``instances`` and records its constructor
kwargs, the ``CUDA_VISIBLE_DEVICES`` it saw when built, its requests (with
their SamplingParams), aborts and shutdowns, for the tests to assert on. Its
tokenizer records each ``apply_chat_template`` call's arguments (``calls``);
a worker process started by a test also appends them, as JSON lines, to the
file named by ``TRTLLM_STAND_IN_RECORD`` when it is set.

``test_tensorrt_llm_engine.py::test_real_tensorrt_llm_on_gpu`` runs the same
engine on the real library, on a GPU node.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

__version__ = "0.0.0+stand-in"
STAND_IN = True
# a worker process started by a test can slow it down to watch tokens stream
TOKEN_DELAY_S = float(os.environ.get("TRTLLM_STAND_IN_TOKEN_DELAY_S", "0.002"))
instances: list[LLM] = []

_MARKER = re.compile(r"<\|\w+\|>")


def _token_id(word: str) -> int:
    return zlib.crc32(word.encode()) % 32000


@dataclass
class SamplingParams:
    max_tokens: int = 32  # TensorRT-LLM's default too: callers should always set it
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None


class Tokenizer:
    """``apply_chat_template`` with a fixed template: ``<|role|>content`` lines."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def apply_chat_template(self, conversation: list[dict[str, Any]], *,
                            tokenize: bool = True, add_generation_prompt: bool = False,
                            **kwargs: Any) -> str | list[int]:
        call = {"conversation": conversation, "tokenize": tokenize,
                "add_generation_prompt": add_generation_prompt, **kwargs}
        self.calls.append(call)
        record = os.environ.get("TRTLLM_STAND_IN_RECORD")
        if record:
            with open(record, "a", encoding="utf-8") as file:
                file.write(json.dumps(call) + "\n")
        text = "".join(f"<|{m['role']}|>{m['content']}\n" for m in conversation)
        if add_generation_prompt:
            text += "<|assistant|>"
        return [_token_id(w) for w in text.split()] if tokenize else text


@dataclass
class CompletionOutput:
    index: int = 0
    text: str = ""  # cumulative
    text_diff: str = ""  # what the latest output added
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None


class RequestOutput:
    """What ``generate_async`` returns: iterate it for its updates (it yields itself)."""

    def __init__(self, llm: LLM, prompt: str, params: SamplingParams, streaming: bool):
        self.llm = llm
        self.prompt = prompt
        self.sampling_params = params
        self.streaming = streaming
        self.prompt_token_ids = [_token_id(w) for w in prompt.split()]
        self.outputs = [CompletionOutput()]
        self.finished = False
        self.aborted = False
        words = _MARKER.sub(" ", prompt).split()
        self._answer = [w if i == 0 else " " + w for i, w in enumerate(words)]

    def abort(self) -> None:
        self.aborted = True
        self.llm.aborts.append(self)

    def __aiter__(self) -> RequestOutput:
        return self

    async def __anext__(self) -> RequestOutput:
        if self.finished:
            raise StopAsyncIteration
        await asyncio.sleep(TOKEN_DELAY_S)
        if self.aborted:
            self._finish("cancelled", "")
        elif self.streaming:
            self._step()
        else:
            self._run_to_end()
        return self

    def _run_to_end(self) -> None:
        start = len(self.outputs[0].text)
        while not self.finished:
            self._step()
        self.outputs[0].text_diff = self.outputs[0].text[start:]

    def _step(self) -> None:
        out, params = self.outputs[0], self.sampling_params
        done = len(out.token_ids)
        if done >= len(self._answer):
            self._finish("stop", "")
            return
        word = self._answer[done]
        out.token_ids.append(_token_id(word))
        text = out.text + word
        stops = [params.stop] if isinstance(params.stop, str) else params.stop or []
        cut = min((text.find(s) for s in stops if s in text), default=-1)
        if cut >= 0:
            self._finish("stop", text[len(out.text):cut])
        elif len(out.token_ids) >= params.max_tokens:
            self._finish("length", word)
        else:
            out.text, out.text_diff = text, word

    def _finish(self, reason: str, diff: str) -> None:
        out = self.outputs[0]
        out.text, out.text_diff, out.finish_reason = out.text + diff, diff, reason
        self.finished = True


class LLM:
    """Built once per worker; records what the tests check."""

    def __init__(self, model: str, **kwargs: Any):
        self.model = model
        self.kwargs = kwargs
        self.cuda_visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.tokenizer = Tokenizer()
        self.requests: list[RequestOutput] = []
        self.aborts: list[RequestOutput] = []
        self.shutdowns = 0
        instances.append(self)

    def generate(self, inputs: str | list[str], sampling_params: SamplingParams | None = None,
                 ) -> RequestOutput | list[RequestOutput]:
        prompts = [inputs] if isinstance(inputs, str) else list(inputs)
        results = []
        for prompt in prompts:
            result = self._request(prompt, sampling_params, streaming=False)
            result._run_to_end()
            results.append(result)
        return results[0] if isinstance(inputs, str) else results

    def generate_async(self, inputs: str, sampling_params: SamplingParams | None = None,
                       streaming: bool = False) -> RequestOutput:
        return self._request(inputs, sampling_params, streaming)

    def shutdown(self) -> None:
        self.shutdowns += 1

    def _request(self, prompt: str, params: SamplingParams | None,
                 streaming: bool) -> RequestOutput:
        if self.shutdowns:
            raise RuntimeError("the LLM has been shut down")
        result = RequestOutput(self, prompt, params or SamplingParams(), streaming)
        self.requests.append(result)
        return result
