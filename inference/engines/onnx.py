"""The ``onnx`` engine: a local ONNX causal LM run with ONNX Runtime, in a worker.

The endpoint's ``path`` is a folder holding ``model.onnx`` (or its only
``*.onnx`` file), ``config.json`` and the tokenizer files
(``AutoTokenizer.from_pretrained`` reads them, chat template included).
:func:`inference.onnx_export.export_to_onnx` writes such a folder from a
Hugging Face one. The graph's inputs and outputs are read from the session
(the names are those of optimum's ``ORTModelForCausalLM`` exports, though only
our own export is tested):

    inputs   input_ids, attention_mask, position_ids (optional),
             past_key_values.{i}.key / .value (optional)
    outputs  logits, present.{i}.key / .value (when the inputs have a cache)

With a cache each step feeds only the new token. A graph without one
(input_ids + attention_mask -> logits) is run again over the whole sequence at
every step: fine for tiny models, quadratic for real ones.

It runs on ``CPUExecutionProvider``, or on ``CUDAExecutionProvider`` when the
endpoint has a ``gpu_id`` (onnxruntime-gpu). Each request decodes one sequence
(batch of 1) in a loop whose ONNX steps run in threads (``asyncio.to_thread``)
so the worker's event loop keeps serving other requests; ONNX Runtime's
``run`` may be called from several threads at once. Sampling is greedy at
temperature 0 (or none), else temperature / top-k / top-p with numpy, seeded
by the request's ``seed``.

onnxruntime, numpy and transformers are imported inside the methods: the
module is cheap to import in processes that never run it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.utils.translation import gettext as _

from ..errors import ContextTooLong, EngineUnavailable
from ..registry import register_engine
from ..tool_parsing import tools_in_play, with_tool_calls
from ..tool_templates import tool_prompt_ids, uses_tool_template
from .base import ChatRequest, Delta, EndpointConfig, Usage, in_thread
from .local import LocalEngine

logger = logging.getLogger(__name__)

CANCELLED = "cancelled"  # finish_reason of a stream stopped by cancel()
MODEL_FILE = "model.onnx"
PAST_PREFIX = "past_key_values."
_NUMPY_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
                "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32"}


@register_engine("onnx", runs_in="worker")
class OnnxEngine(LocalEngine):
    """A local ONNX model folder (see the module docstring for its layout)."""

    def __init__(self, config: EndpointConfig):
        super().__init__(config)
        self._model: _OnnxModel | None = None
        self._tokenizer: Any = None
        self._load_lock = asyncio.Lock()
        self._running: set[str] = set()
        self._cancelled: set[str] = set()

    # -- the interface

    async def load(self) -> None:
        """Open the ONNX Runtime session and the tokenizer (in a thread); once."""
        async with self._load_lock:
            if self._model is None:
                self._model, self._tokenizer = await in_thread(self._load_blocking)

    def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        """The request's deltas, its tool calls read out of the text (``with_tool_calls``)."""
        return with_tool_calls(self.config, request, self._stream(request))

    async def _stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        """One delta per token that completes some text; the last has finish_reason and usage."""
        await self.load()
        model, tokenizer = self._model, self._tokenizer
        assert model is not None  # load() set it
        prompt = await in_thread(_prompt_ids, tokenizer, request.messages,
                                 self.config.tool_format, tools_in_play(self.config, request))
        budget = self._budget(model, len(prompt), request)
        sampler = _Sampler.for_request(request, self.config.params)
        text = _TextStream(tokenizer, request.stop or [])
        state = _Sequence(list(prompt))
        request_id = request.request_id
        if request_id:
            self._running.add(request_id)
        produced = pending = 0
        finish = "length"
        try:
            while produced < budget:
                if request_id in self._cancelled:
                    finish = CANCELLED
                    break
                logits = await asyncio.to_thread(model.step, state)
                token = sampler.pick(logits)
                if token in model.eos_ids:
                    finish = "stop"
                    break
                state.ids.append(token)
                produced += 1
                pending += 1
                piece, stopped = text.add(token)
                if piece:
                    yield Delta(text=piece, tokens=pending)
                    pending = 0
                if stopped:
                    finish = "stop"
                    break
            tail = "" if text.stopped else text.flush()
            yield Delta(text=tail, tokens=pending, finish_reason=finish,
                        usage=Usage(prompt_tokens=len(prompt), completion_tokens=produced))
        finally:
            self._running.discard(request_id)
            self._cancelled.discard(request_id)

    async def cancel(self, request_id: str) -> None:
        """The request stops before its next step; its stream ends with "cancelled"."""
        if request_id in self._running:
            self._cancelled.add(request_id)

    async def aclose(self) -> None:
        """Stop the running requests and drop the session (its memory goes with it)."""
        self._cancelled.update(self._running)
        self._model = self._tokenizer = None

    # -- helpers

    def _budget(self, model: _OnnxModel, prompt_tokens: int, request: ChatRequest) -> int:
        """How many tokens may be generated; a prompt that leaves no room is ContextTooLong."""
        window = self.config.context_window
        if model.max_positions:
            window = min(window, model.max_positions)
        if prompt_tokens >= window:
            raise ContextTooLong(_("%(model)s: the prompt has %(prompt)d tokens; the context "
                                   "window is %(window)d")
                                 % {"model": self.config.name, "prompt": prompt_tokens,
                                    "window": window})
        wanted = request.max_tokens or self.config.max_output_tokens
        return min(wanted, window - prompt_tokens)

    def _load_blocking(self) -> tuple[_OnnxModel, Any]:
        folder = Path(self.config.path)
        model_file = _model_file(folder)
        try:
            # onnxruntime: heavy and optional (the local extra), loaded only in a worker
            import onnxruntime
        except ImportError:
            raise EngineUnavailable(_("onnxruntime is not installed: pip install onnxruntime "
                                      "(or onnxruntime-gpu)")) from None
        session = onnxruntime.InferenceSession(str(model_file),
                                               providers=self._providers(onnxruntime))
        if self.config.gpu_id is not None and "CUDAExecutionProvider" not in (
                session.get_providers()):
            raise EngineUnavailable(_("%(model)s: ONNX Runtime could not start CUDA on GPU "
                                      "%(gpu)s (see the worker's log)")
                                    % {"model": self.config.name, "gpu": self.config.gpu_id})
        tokenizer = _tokenizer(folder)
        model = _OnnxModel(session, _read_json(folder / "config.json"),
                           _read_json(folder / "generation_config.json"), tokenizer)
        logger.info("%s: loaded %s on %s", self.config.name, model_file,
                    session.get_providers()[0])
        return model, tokenizer

    def _providers(self, onnxruntime) -> list:
        gpu = self.config.gpu_id
        if gpu is None:
            return ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise EngineUnavailable(
                _("%(model)s: the endpoint asks for GPU %(gpu)s, but this onnxruntime has no "
                  "CUDAExecutionProvider: pip install onnxruntime-gpu, or clear gpu_id to run "
                  "on the CPU") % {"model": self.config.name, "gpu": gpu})
        return [("CUDAExecutionProvider", {"device_id": gpu}), "CPUExecutionProvider"]


# -- the model folder ---------------------------------------------------------------------


def _model_file(folder: Path) -> Path:
    if not folder.is_dir():
        raise EngineUnavailable(_("ONNX model folder %(folder)s does not exist")
                                % {"folder": folder})
    if (folder / MODEL_FILE).is_file():
        return folder / MODEL_FILE
    found = sorted(folder.glob("*.onnx"))
    if len(found) != 1:
        if not found:
            message = _("ONNX model folder %(folder)s has no .onnx file")
        else:
            message = _("ONNX model folder %(folder)s has %(count)d .onnx files and no "
                        "%(file)s")
        raise EngineUnavailable(message % {"folder": folder, "count": len(found),
                                           "file": MODEL_FILE})
    return found[0]


def _tokenizer(folder: Path):
    # transformers: heavy and optional (the local extra), loaded only where a model runs
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise EngineUnavailable(_("ONNX model folder %(folder)s: no usable tokenizer "
                                  "(%(error)s)") % {"folder": folder, "error": exc}) from exc


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _ids(value: Any) -> set[int]:
    if value is None:
        return set()
    return {int(v) for v in value} if isinstance(value, list) else {int(value)}


@dataclass
class _Sequence:
    """One request's tokens and key/value cache; ``fed`` tokens are in the cache."""

    ids: list[int]
    fed: int = 0
    past: dict[str, Any] = field(default_factory=dict)


class _OnnxModel:
    """The session plus what its inputs and outputs say about feeding it."""

    def __init__(self, session, config: dict[str, Any], generation: dict[str, Any], tokenizer):
        inputs = {i.name: i for i in session.get_inputs()}
        self.session = session
        self.past = [name for name in inputs if name.startswith(PAST_PREFIX)]
        unknown = set(inputs) - {"input_ids", "attention_mask", "position_ids", *self.past}
        if "input_ids" not in inputs or unknown:
            raise EngineUnavailable(_("the ONNX graph's inputs are not a causal LM's: "
                                      "%(inputs)s") % {"inputs": sorted(inputs)})
        self.outputs = [o.name for o in session.get_outputs()]
        self.presents = {name: "present." + name[len(PAST_PREFIX):] for name in self.past}
        missing = set(self.presents.values()) - set(self.outputs)
        if missing:
            raise EngineUnavailable(_("the ONNX graph lacks the outputs %(outputs)s")
                                    % {"outputs": sorted(missing)})
        self.inputs = set(inputs)
        self.id_type = _NUMPY_TYPES.get(inputs["input_ids"].type, "int64")
        self.empty_past = self._empty_past(inputs, config)
        self.max_positions = config.get("max_position_embeddings")
        self.eos_ids = (_ids(config.get("eos_token_id")) | _ids(generation.get("eos_token_id"))
                        | _ids(tokenizer.eos_token_id))

    def _empty_past(self, inputs: dict, config: dict[str, Any]) -> dict[str, Any]:
        """The first step's cache: [1, kv_heads, 0, head_dim] each."""
        # numpy: comes with the local extra, needed only where a model runs
        import numpy as np

        if not self.past:
            return {}
        heads = config.get("num_attention_heads") or 1
        sizes = {1: config.get("num_key_value_heads") or heads,
                 3: config.get("head_dim") or (config.get("hidden_size") or heads) // heads}
        empty = {}
        for name in self.past:
            shape = list(inputs[name].shape)
            dims = [1, shape[1] if isinstance(shape[1], int) else sizes[1], 0,
                    shape[3] if isinstance(shape[3], int) else sizes[3]]
            empty[name] = np.zeros(dims, dtype=_NUMPY_TYPES.get(inputs[name].type, "float32"))
        return empty

    def step(self, seq: _Sequence):
        """Run the new tokens (all of them without a cache); the last position's logits."""
        # numpy: comes with the local extra, needed only where a model runs
        import numpy as np

        start = seq.fed if self.past else 0
        feed: dict[str, Any] = {"input_ids": np.array([seq.ids[start:]], dtype=self.id_type)}
        if "attention_mask" in self.inputs:
            feed["attention_mask"] = np.ones((1, len(seq.ids)), dtype="int64")
        if "position_ids" in self.inputs:
            feed["position_ids"] = np.arange(start, len(seq.ids), dtype="int64")[None, :]
        feed.update(seq.past or self.empty_past)
        named = dict(zip(self.outputs, self.session.run(None, feed), strict=True))
        seq.past = {past: named[present] for past, present in self.presents.items()}
        seq.fed = len(seq.ids)
        return named.get("logits", next(iter(named.values())))[0, -1]


# -- prompt, sampling and text ------------------------------------------------------------


def _content(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # OpenAI content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def _prompt_ids(tokenizer, messages: list[dict[str, Any]], tool_format: str = "",
                tools: list[dict[str, Any]] | None = None) -> list[int]:
    """The chat template's tokens (with ``tools`` as ``tool_format`` says); a plain
    "role: content" transcript when there is no template."""
    if uses_tool_template(tool_format, messages, tools):
        return tool_prompt_ids(tokenizer, messages, tools, tool_format)
    plain = [{"role": m.get("role", "user"), "content": _content(m)} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) else ids)
    text = "".join(f"{m['role']}: {m['content']}\n" for m in plain) + "assistant: "
    return list(tokenizer(text)["input_ids"])


@dataclass
class _Sampler:
    temperature: float | None
    top_p: float | None
    top_k: int | None
    rng: Any

    @classmethod
    def for_request(cls, request: ChatRequest, defaults: dict[str, Any]) -> _Sampler:
        # numpy: comes with the local extra, needed only where a model runs
        import numpy as np

        def pick(name: str, value: Any) -> Any:
            return value if value is not None else defaults.get(name)

        return cls(temperature=pick("temperature", request.temperature),
                   top_p=pick("top_p", request.top_p),
                   top_k=pick("top_k", request.extra.get("top_k")),
                   rng=np.random.default_rng(pick("seed", request.seed)))

    def pick(self, logits) -> int:
        """Greedy at temperature 0 or none; else a draw from the top-k / top-p of the softmax."""
        # numpy: comes with the local extra, needed only where a model runs
        import numpy as np

        if not self.temperature or self.temperature <= 0:
            return int(np.argmax(logits))
        scores = logits.astype("float64") / float(self.temperature)
        if self.top_k and 0 < int(self.top_k) < scores.size:
            kth = np.partition(scores, -int(self.top_k))[-int(self.top_k)]
            scores[scores < kth] = -np.inf
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        if self.top_p is not None and 0 < float(self.top_p) < 1:
            order = np.argsort(-probs)
            before = np.cumsum(probs[order]) - probs[order]  # mass of the likelier tokens
            probs[order[before >= float(self.top_p)]] = 0.0
            probs /= probs.sum()
        return int(self.rng.choice(probs.size, p=probs))


class _TextStream:
    """Tokens in, text out: complete UTF-8 only, special tokens skipped, stop strings cut.

    Decodes a short window of recent tokens (as vLLM and TGI do) so that a
    character split over several byte tokens comes out once it is whole, and
    holds back a tail that could be the start of a stop string.
    """

    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.ids: list[int] = []
        self.prefix = self.read = 0
        self.held = ""
        self.stopped = False

    def add(self, token: int) -> tuple[str, bool]:
        """(text to emit now, whether a stop string ended the answer)."""
        self.ids.append(token)
        text = self.held + self._new_text()
        self.held = ""
        hits = [text.find(s) for s in self.stops if s in text]
        if hits:
            self.stopped = True
            return text[:min(hits)], True
        keep = max((n for s in self.stops for n in range(1, len(s)) if text.endswith(s[:n])),
                   default=0)
        if keep:
            text, self.held = text[:-keep], text[-keep:]
        return text, False

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held

    def _new_text(self) -> str:
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix:self.read], skip_special_tokens=True)
        now = decode(self.ids[self.prefix:], skip_special_tokens=True)
        if len(now) <= len(before) or now.endswith("\ufffd"):
            return ""  # a special token, or a character not complete yet
        self.prefix, self.read = self.read, len(self.ids)
        return now[len(before):]
