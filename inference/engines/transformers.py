"""The ``transformers`` engine: a local Hugging Face model folder, run in a
Celery worker's event loop, with dynamic batching of concurrent requests.

``stream()`` puts each request on a queue. A batcher task on the worker's loop
takes the first waiting request, waits ``params.batch_wait_ms`` (default 5 ms)
for more, up to ``config.max_batch``, and runs the batch in one thread: the
prompts are left-padded under an attention mask, then a decode loop does one
forward pass per step for the whole batch, reusing the KV cache. Each new
token is decoded incrementally (multi-byte characters wait until complete)
and handed to its request's queue with ``loop.call_soon_threadsafe`` (one hop
per step for the whole batch), so the loop streams it at once. A sequence that
ends (EOS, a stop string, ``max_tokens``, ``cancel()``, a consumer that went
away) is dropped from the batch and its KV-cache rows with it; the others go
on. Requests that arrive mid-batch wait for the next one.

``params.batching: false`` serialises the requests (batches of one, no wait):
``bench/batching.py`` compares the two. On the 2-layer hidden-64 test Llama
(2 CPU cores) a step costs about the same for 8 sequences as for 1, so eight
concurrent requests stream several times faster batched than one at a time.
``params.torch_threads`` sets torch's intra-op threads (process-wide): torch
work from more than one thread (two engines in a process) on a small CPU box
slowed each step 2.5x with the default thread count and not at all with 1.

torch and transformers are imported inside the methods: the web process
imports this module only to register the kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadRequest, ContextTooLong, EngineError, EngineUnavailable, ServerError
from ..registry import register_engine
from .base import ChatRequest, Delta, EndpointConfig, Engine, Usage

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEFAULT_BATCH_WAIT_MS = 5.0
_FALSE = {"0", "false", "no", "off"}


@dataclass
class BatchStats:
    """What the batcher has done: read by the tests and the benchmark."""

    batches: int = 0  # batches run
    sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1000))  # of the last batches
    steps: int = 0  # forward passes (the prefill counts as one)
    dropped: int = 0  # sequences stopped early: cancelled, or their consumer went away


@dataclass(frozen=True)
class Sampling:
    """The sampling settings of one request: request values over ``config.params``."""

    max_tokens: int
    temperature: float | None = None  # 0 or None: greedy
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


def resolve_sampling(config: EndpointConfig, request: ChatRequest) -> Sampling:
    """Request values first, then the endpoint's ``params``, then the defaults."""
    params = config.params

    def pick(name: str, value: Any) -> Any:
        return value if value is not None else params.get(name)

    stop = pick("stop", request.stop) or ()
    top_k = pick("top_k", request.extra.get("top_k"))
    sampling = Sampling(
        max_tokens=int(pick("max_tokens", request.max_tokens) or config.max_output_tokens),
        temperature=_optional(float, pick("temperature", request.temperature)),
        top_p=_optional(float, pick("top_p", request.top_p)),
        top_k=_optional(int, top_k) or None,  # 0 means no top-k, as in transformers
        seed=_optional(int, pick("seed", request.seed)),
        stop=(stop,) if isinstance(stop, str) else tuple(s for s in stop if s),
    )
    _check_sampling(sampling)
    return sampling


def _optional(cast: Callable[[Any], Any], value: Any) -> Any:
    return None if value is None else cast(value)


def _check_sampling(sampling: Sampling) -> None:
    """Refuse values that would break the batch's decode loop, not just this request."""
    if sampling.max_tokens < 1:
        raise BadRequest(f"max_tokens must be at least 1, not {sampling.max_tokens}")
    if sampling.temperature is not None and sampling.temperature < 0:
        raise BadRequest(f"temperature must not be negative, not {sampling.temperature}")
    if sampling.top_p is not None and not 0 < sampling.top_p <= 1:
        raise BadRequest(f"top_p must be in (0, 1], not {sampling.top_p}")
    if sampling.top_k is not None and sampling.top_k < 0:
        raise BadRequest(f"top_k must not be negative, not {sampling.top_k}")


def _content(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # OpenAI content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def _find_stop(text: str, stops: Iterable[str], start: int) -> int | None:
    """Where the first stop string begins in ``text[start:]``, or None."""
    found = [i for i in (text.find(stop, start) for stop in stops) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: tuple[str, ...], start: int) -> int:
    """How many trailing characters could be the start of a stop string (kept unsent)."""
    longest = max((len(stop) for stop in stops), default=1) - 1
    for size in range(min(longest, len(text) - start), 0, -1):
        tail = text[-size:]
        if any(stop.startswith(tail) for stop in stops):
            return size
    return 0


class Detokenizer:
    """Incremental decoding: text only once its bytes form whole characters.

    Decodes a small window (the tokens of the previous emission plus the new
    ones) rather than everything so far, so a step costs the same at token 1000
    as at token 1; the window's first tokens give decoders that strip a leading
    space (SentencePiece) the context they need. Trailing U+FFFD (a character
    cut between tokens) is held back until the next token completes it.
    """

    MAX_PENDING = 16  # tokens of undecodable bytes after which they are shown as U+FFFD

    def __init__(self, decode: Callable[[list[int]], str]):
        self._decode = decode
        self.ids: list[int] = []
        self._prefix = 0  # start of the decoding window
        self._read = 0  # tokens whose text is complete and shown
        self._shown = 0  # characters after ``_read``'s text already returned

    def push(self, token: int) -> str:
        self.ids.append(token)
        return self._advance(force=len(self.ids) - self._read > self.MAX_PENDING)

    def flush(self) -> str:
        """What is left, incomplete characters included (as U+FFFD)."""
        return self._advance(force=True)

    def _advance(self, *, force: bool) -> str:
        before = self._decode(self.ids[self._prefix:self._read])
        new = self._decode(self.ids[self._prefix:])[len(before):]
        complete = force or not new.endswith("\ufffd")
        if not complete:
            new = new.rstrip("\ufffd")
        piece = new[self._shown:]
        if complete:
            self._prefix, self._read, self._shown = self._read, len(self.ids), 0
        else:
            self._shown = max(self._shown, len(new))
        return piece


@dataclass(eq=False)
class _Job:
    """One request, shared by the event loop and the generation thread."""

    request_id: str
    prompt_ids: list[int]
    sampling: Sampling
    detokenizer: Detokenizer
    generator: torch.Generator | None = None
    queue: asyncio.Queue[Delta | EngineError] = field(default_factory=asyncio.Queue)
    cancelled: bool = False  # set by the loop; the thread stops the sequence at its next step
    started: bool = False  # taken into a batch
    done: bool = False  # its last delta (or error) has been handed over
    text: str = ""
    sent: int = 0  # characters of ``text`` already streamed
    unsent_tokens: int = 0

    def accept(self, token: int, eos: frozenset[int]) -> Delta | None:
        """Take the next token; return what to stream now, if anything."""
        self.unsent_tokens += 1
        is_eos = token in eos
        last = is_eos or len(self.detokenizer.ids) + 1 >= self.sampling.max_tokens
        if is_eos:
            self.detokenizer.ids.append(token)  # counted, never shown
        else:
            self.text += self.detokenizer.push(token)
        if last:
            self.text += self.detokenizer.flush()
        cut = _find_stop(self.text, self.sampling.stop, self.sent)
        if cut is not None:
            self.text = self.text[:cut]
            return self.finish("stop")
        if last:
            return self.finish("stop" if is_eos else "length")
        return self._emit()

    def _emit(self) -> Delta | None:
        end = len(self.text) - _held_back(self.text, self.sampling.stop, self.sent)
        if end <= self.sent:
            return None
        piece, self.sent = self.text[self.sent:end], end
        tokens, self.unsent_tokens = self.unsent_tokens, 0
        return Delta(text=piece, tokens=tokens)

    def finish(self, reason: str) -> Delta:
        self.done = True
        rest = "" if reason == "cancelled" else self.text[self.sent:]
        usage = Usage(prompt_tokens=len(self.prompt_ids),
                      completion_tokens=len(self.detokenizer.ids))
        return Delta(text=rest, tokens=self.unsent_tokens, finish_reason=reason, usage=usage)


class _Batch:
    """The tensors of a running batch; row ``i`` belongs to ``jobs[i]``."""

    def __init__(self, jobs: list[_Job], pad_id: int, device: str, explicit_mask: bool):
        import torch

        width = max(len(job.prompt_ids) for job in jobs)
        pads = [width - len(job.prompt_ids) for job in jobs]
        self.jobs = jobs
        self.input_ids = torch.tensor(
            [[pad_id] * pad + job.prompt_ids for pad, job in zip(pads, jobs, strict=True)],
            device=device)
        self.mask = torch.tensor([[0] * pad + [1] * (width - pad) for pad in pads], device=device)
        # Left padding shifts the prompts: count positions from each one's first real token.
        self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self.past: Any = None
        self.explicit_mask = explicit_mask and any(pads)

    def attention_mask(self) -> torch.Tensor:
        """The 2D padding mask, or (padded batches, SDPA) a ready 4D boolean one.

        With padding, transformers rebuilds a 4D mask from the 2D one at every
        step (about 2 ms with the tiny model on CPU, 4x the forward pass itself);
        built here it is a view for a decode step and one small tensor for the prefill.
        """
        if not self.explicit_mask:
            return self.mask
        import torch

        keys = self.mask.bool()[:, None, None, :]
        if self.past is not None:
            return keys
        width = self.mask.shape[-1]
        causal = torch.ones(width, width, dtype=torch.bool, device=self.mask.device).tril()
        # A padding query sees itself: a row with nothing to attend to would give NaN.
        return (causal & keys) | torch.eye(width, dtype=torch.bool, device=self.mask.device)

    def advance(self, tokens: list[int]) -> None:
        """Feed each row its new token at the next step."""
        import torch

        self.input_ids = torch.tensor(tokens, device=self.mask.device).unsqueeze(-1)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(tokens), 1))], dim=-1)
        self.positions = self.positions[:, -1:] + 1

    def compact(self) -> None:
        """Drop the rows of finished sequences, KV cache included."""
        import torch

        keep = [row for row, job in enumerate(self.jobs) if not job.done]
        if len(keep) == len(self.jobs):
            return
        self.jobs = [self.jobs[row] for row in keep]
        if not keep:
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.input_ids, self.mask = self.input_ids[index], self.mask[index]
        self.positions = self.positions[index]
        if self.past is not None:
            self.past.batch_select_indices(index)


def _sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """One token from one row of logits, with temperature, top-k and top-p."""
    import torch

    scores = logits.float() / sampling.temperature
    if sampling.top_k and sampling.top_k < scores.numel():
        kth = torch.topk(scores, sampling.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if sampling.top_p is not None and sampling.top_p < 1:
        ordered, order = torch.sort(scores, descending=True)
        probs = ordered.softmax(-1)
        # Keep the smallest head whose mass reaches top_p, and at least the first token.
        beyond = (probs.cumsum(-1) - probs) >= sampling.top_p
        beyond[0] = False
        scores = scores.index_fill(0, order[beyond], float("-inf"))
    return int(torch.multinomial(scores.softmax(-1), 1, generator=generator))


def _full_attention_sdpa(config: Any) -> bool:
    """Whether a ready 4D mask is right for this model: SDPA, every layer full attention."""
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if getattr(config, "sliding_window", None) or getattr(config, "attention_chunk_size", None):
        return False
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    return all(kind == "full_attention" for kind in layer_types)


def _failure(exc: BaseException) -> EngineError:
    """A fresh error for one request of a batch that failed."""
    if isinstance(exc, EngineUnavailable):
        return EngineUnavailable(exc.message)
    return ServerError(f"local generation failed: {type(exc).__name__}: {exc}")


def _deliver(outbox: list[tuple[_Job, Delta | EngineError]]) -> None:
    for job, item in outbox:
        job.queue.put_nowait(item)


@register_engine("transformers", runs_in="worker")
class TransformersEngine(Engine):
    """A Hugging Face causal LM from ``config.path``, batching concurrent requests."""

    def __init__(self, config: EndpointConfig):
        super().__init__(config)
        self.stats = BatchStats()
        self.batching = str(config.params.get("batching", True)).lower() not in _FALSE
        self.max_batch = max(1, int(config.max_batch or 1)) if self.batching else 1
        wait_ms = float(config.params.get("batch_wait_ms", DEFAULT_BATCH_WAIT_MS))
        self.batch_wait = wait_ms / 1000 if self.batching else 0.0
        self._model: Any = None
        self._tokenizer: Any = None
        self._device = "cpu"
        self._eos: frozenset[int] = frozenset()
        self._pad_id = 0
        self._forward_extra: dict[str, Any] = {}
        self._explicit_mask = False
        self._load_lock = asyncio.Lock()
        # One thread does all the torch work (loading, every batch): one set of
        # intra-op threads, one CUDA context, and the event loop stays free.
        self._thread = ThreadPoolExecutor(max_workers=1,
                                          thread_name_prefix=f"transformers-{config.name}")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: asyncio.Queue[_Job | None] | None = None
        self._batcher: asyncio.Task[None] | None = None
        self._live: set[_Job] = set()
        self._closing = False

    # Loading -------------------------------------------------------------------

    async def load(self) -> None:
        """Read the tokenizer and the weights (in a thread); later calls do nothing."""
        async with self._load_lock:
            if self._closing:
                raise EngineUnavailable(f"{self.config.name}: the engine was closed")
            if self._model is None:
                started = time.monotonic()
                await self._in_thread(self._load_sync)
                logger.info("%s: loaded %s on %s in %.1fs", self.config.name, self.config.path,
                            self._device, time.monotonic() - started)

    def _load_sync(self) -> None:
        folder = self._folder()
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise EngineUnavailable("the transformers engine needs torch and transformers "
                                    f"(pip install 'openclaw[local]'): {exc}") from None
        device = self._pick_device(torch)
        if self.config.params.get("torch_threads"):
            torch.set_num_threads(int(self.config.params["torch_threads"]))  # process-wide
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, **self._dtype(device))
            model = model.to(device).eval()
        except Exception as exc:  # a broken folder fails in many ways (OSError, ValueError...)
            raise EngineUnavailable(f"cannot load the model in {folder}: "
                                    f"{type(exc).__name__}: {exc}") from None
        self._install(model, tokenizer, device)

    def _dtype(self, device: str) -> dict[str, Any]:
        """``params.dtype`` ("auto", "bfloat16"...); by default the checkpoint's on a GPU."""
        dtype = self.config.params.get("dtype") or ("auto" if device != "cpu" else None)
        if dtype is None:
            return {}
        import transformers

        major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
        return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": dtype}

    def _install(self, model: Any, tokenizer: Any, device: str) -> None:
        self._model, self._tokenizer, self._device = model, tokenizer, device
        self._eos = self._eos_ids(tokenizer, model)
        pad = tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else min(self._eos, default=0)
        if "logits_to_keep" in inspect.signature(model.forward).parameters:
            self._forward_extra = {"logits_to_keep": 1}  # no prefill logits for every position
        self._explicit_mask = _full_attention_sdpa(model.config)
        logger.info("%s: %s, %s, explicit 4D mask: %s", self.config.name,
                    type(model).__name__, model.dtype, self._explicit_mask)

    def _folder(self) -> Path:
        if not self.config.path:
            raise EngineUnavailable(f"{self.config.name}: no model folder configured (path)")
        folder = Path(self.config.path).expanduser()
        if not folder.is_dir():
            raise EngineUnavailable(f"model folder {folder} does not exist or is not a folder")
        if not (folder / "config.json").is_file():
            raise EngineUnavailable(f"model folder {folder} has no config.json: "
                                    "not a Hugging Face model folder")
        return folder

    def _pick_device(self, torch: Any) -> str:
        gpu = self.config.gpu_id
        if gpu is None:
            return "cpu"
        if not torch.cuda.is_available():
            raise EngineUnavailable(f"{self.config.name}: gpu_id {gpu} is set but CUDA is not "
                                    "available in this worker")
        if gpu >= torch.cuda.device_count():
            raise EngineUnavailable(f"{self.config.name}: gpu_id {gpu} does not exist "
                                    f"({torch.cuda.device_count()} GPU(s) visible)")
        return f"cuda:{gpu}"

    @staticmethod
    def _eos_ids(tokenizer: Any, model: Any) -> frozenset[int]:
        ids = {tokenizer.eos_token_id}
        configured = getattr(model.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return frozenset(i for i in ids if i is not None)

    # Requests ------------------------------------------------------------------

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        """The prompt's token ids: the chat template, or "role: content" lines without one."""
        turns = [{"role": m.get("role", "user"), "content": _content(m)} for m in messages]
        tokenizer = self._tokenizer
        if getattr(tokenizer, "chat_template", None):
            try:
                ids = tokenizer.apply_chat_template(turns, add_generation_prompt=True)
            except Exception as exc:  # jinja errors: roles the template refuses, etc.
                raise BadRequest(f"the chat template rejected the messages: {exc}") from None
            return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        text = "".join(f"{t['role']}: {t['content']}\n" for t in turns) + "assistant:"
        return list(tokenizer(text)["input_ids"])

    def _check_context(self, prompt_tokens: int, max_tokens: int) -> None:
        window = self.config.context_window
        if prompt_tokens + max_tokens > window:
            raise ContextTooLong(f"{self.config.name}: {prompt_tokens} prompt tokens + "
                                 f"max_tokens {max_tokens} exceed the context window of "
                                 f"{window} tokens")

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        job = await self._submit(request)
        try:
            while True:
                item = await job.queue.get()
                if isinstance(item, EngineError):
                    raise item
                yield item
                if item.finish_reason:
                    return
        finally:
            # A consumer that went away frees its row at the next step.
            job.cancelled = job.cancelled or not job.done
            self._live.discard(job)

    async def _submit(self, request: ChatRequest) -> _Job:
        await self.load()
        prompt = self.prompt_ids(request.messages)
        sampling = resolve_sampling(self.config, request)
        self._check_context(len(prompt), sampling.max_tokens)
        job = _Job(request.request_id, prompt, sampling, self._detokenizer(),
                   generator=self._generator(sampling))
        self._ensure_batcher()
        self._live.add(job)
        self._pending.put_nowait(job)
        return job

    def _detokenizer(self) -> Detokenizer:
        backend = getattr(self._tokenizer, "backend_tokenizer", None)  # fast tokenizers: Rust
        if backend is not None:
            return Detokenizer(lambda ids: backend.decode(ids, skip_special_tokens=True))
        return Detokenizer(lambda ids: self._tokenizer.decode(ids, skip_special_tokens=True))

    def _generator(self, sampling: Sampling) -> torch.Generator | None:
        if sampling.seed is None or not sampling.temperature:
            return None
        import torch

        return torch.Generator(device=self._device).manual_seed(sampling.seed)

    async def cancel(self, request_id: str) -> None:
        """Stop ``request_id``'s sequences at their next step; the rest of the batch goes on."""
        for job in list(self._live):
            if job.request_id == request_id and not job.done:
                job.cancelled = True
                if not job.started:  # still waiting for a batch: answer now
                    job.queue.put_nowait(self._drop(job))
                logger.debug("%s: cancelling %s", self.config.name, request_id)

    # The batcher (event loop) --------------------------------------------------

    def _ensure_batcher(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new loop (tests): what the old one held is gone
            self._loop, self._pending, self._batcher = loop, asyncio.Queue(), None
        if self._batcher is None or self._batcher.done():
            self._batcher = loop.create_task(self._run_batches(),
                                             name=f"batcher:{self.config.name}")

    async def _run_batches(self) -> None:
        while not self._closing:
            jobs = await self._collect()
            if jobs:
                await self._run(jobs)

    async def _collect(self) -> list[_Job]:
        """The first waiting request and those that come within the batching window."""
        queued = not self._pending.empty()
        first = await self._pending.get()
        if first is None:  # aclose() woke us
            return []
        jobs = [first]
        # Requests that queued up during the last batch have waited enough: take them as is.
        deadline = asyncio.get_running_loop().time() + (0 if queued else self.batch_wait)
        while len(jobs) < self.max_batch:
            job = await self._next_pending(deadline)
            if job is None:
                break
            jobs.append(job)
        for job in jobs:
            job.started = True
            if job.cancelled and not job.done:  # its consumer went away while it waited
                self._drop(job)
        return [job for job in jobs if not job.done]

    async def _next_pending(self, deadline: float) -> _Job | None:
        if not self._pending.empty():
            return self._pending.get_nowait()
        timeout = deadline - asyncio.get_running_loop().time()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self._pending.get(), timeout)
        except TimeoutError:
            return None

    async def _run(self, jobs: list[_Job]) -> None:
        self.stats.batches += 1
        self.stats.sizes.append(len(jobs))
        logger.debug("%s: batch of %d", self.config.name, len(jobs))
        try:
            await self._in_thread(self._generate, jobs)
        except Exception as exc:
            logger.error("%s: a batch of %d failed: %r", self.config.name, len(jobs), exc,
                         exc_info=not isinstance(exc, EngineError))
            for job in jobs:
                if not job.done:
                    job.done = True
                    job.queue.put_nowait(_failure(exc))

    # The generation thread -----------------------------------------------------

    async def _in_thread(self, function: Callable[..., None], *args: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def _generate(self, jobs: list[_Job]) -> None:
        """Decode the batch to its end, one forward pass per step for all its rows."""
        import torch

        with torch.inference_mode():
            batch = _Batch(jobs, self._pad_id, self._device, self._explicit_mask)
            while True:
                self._post([(job, self._drop(job)) for job in batch.jobs
                            if job.cancelled and not job.done])
                batch.compact()
                if not batch.jobs:
                    return
                if self._closing:
                    raise EngineUnavailable(f"{self.config.name}: the engine was closed")
                self._step(batch)

    def _drop(self, job: _Job) -> Delta:
        """End a cancelled sequence (``cancel()`` or a consumer that went away)."""
        self.stats.dropped += 1
        return job.finish("cancelled")

    def _step(self, batch: _Batch) -> None:
        out = self._model(input_ids=batch.input_ids, attention_mask=batch.attention_mask(),
                          position_ids=batch.positions, past_key_values=batch.past,
                          use_cache=True, **self._forward_extra)
        self.stats.steps += 1
        batch.past = out.past_key_values
        tokens = self._pick_tokens(out.logits[:, -1, :], batch.jobs)
        outbox: list[tuple[_Job, Delta | EngineError]] = []
        for job, token in zip(batch.jobs, tokens, strict=True):
            delta = job.accept(token, self._eos)
            if delta is not None:
                outbox.append((job, delta))
        self._post(outbox)
        batch.advance(tokens)

    @staticmethod
    def _pick_tokens(logits: torch.Tensor, jobs: list[_Job]) -> list[int]:
        tokens = logits.argmax(dim=-1).tolist()
        for row, job in enumerate(jobs):
            if job.sampling.temperature:
                tokens[row] = _sample(logits[row], job.sampling, job.generator)
        return tokens

    def _post(self, outbox: list[tuple[_Job, Delta | EngineError]]) -> None:
        """Hand a step's deltas to the loop in one hop."""
        if outbox:
            self._loop.call_soon_threadsafe(_deliver, outbox)

    # Unloading -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the batcher (a running batch fails at its next step) and free the model."""
        self._closing = True
        batcher = self._batcher
        if batcher is not None and not batcher.done():
            if self._loop is asyncio.get_running_loop():
                self._pending.put_nowait(None)
                with contextlib.suppress(asyncio.CancelledError):
                    await batcher
            elif not self._loop.is_closed():
                self._loop.call_soon_threadsafe(batcher.cancel)
        self._fail_waiting()
        self._release_model()
        self._thread.shutdown(wait=False)

    def _fail_waiting(self) -> None:
        while self._pending is not None and not self._pending.empty():
            job = self._pending.get_nowait()
            if job is not None and not job.done:
                job.done = True
                job.queue.put_nowait(EngineUnavailable(f"{self.config.name}: the engine was "
                                                       "closed"))

    def _release_model(self) -> None:
        if self._model is None:
            return
        on_cuda = self._device.startswith("cuda")
        self._model = self._tokenizer = None
        gc.collect()
        torch = sys.modules.get("torch")
        if on_cuda and torch is not None:
            torch.cuda.empty_cache()
        logger.info("%s: unloaded %s", self.config.name, self.config.path)
