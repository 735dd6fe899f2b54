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
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.utils import translation
from django.utils.translation import gettext as _

from ..errors import BadRequest, ContextTooLong, EngineError, EngineUnavailable
from ..registry import register_engine
from ..tool_parsing import tools_in_play, with_tool_calls
from ..tool_templates import tool_prompt_ids, uses_tool_template
from .base import ChatRequest, Delta, EndpointConfig, in_thread
from .local import LocalEngine
from .transformers_batching import (
    DEFAULT_BATCH_WAIT_MS,
    Batch,
    BatchStats,
    Detokenizer,
    Job,
    Sampling,
    as_engine_error,
    deliver,
    full_attention_sdpa,
    message_content,
    resolve_sampling,
    sample,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_FALSE = {"0", "false", "no", "off"}


@register_engine("transformers", runs_in="worker")
class TransformersEngine(LocalEngine):
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
        self._pending: asyncio.Queue[Job | None] | None = None
        self._batcher: asyncio.Task[None] | None = None
        self._live: set[Job] = set()
        self._closing = False

    # Loading -------------------------------------------------------------------

    async def load(self) -> None:
        """Read the tokenizer and the weights (in a thread); later calls do nothing."""
        async with self._load_lock:
            if self._closing:
                raise self._closed()
            if self._model is None:
                started = time.monotonic()
                await self._in_thread(self._load_sync)
                logger.info("%s: loaded %s on %s in %.1fs", self.config.name, self.config.path,
                            self._device, time.monotonic() - started)

    def _load_sync(self) -> None:
        folder = self._folder()
        try:
            # torch, transformers: heavy and optional (the local extra), loaded only
            # where a model runs
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise EngineUnavailable(_("the transformers engine needs torch and transformers "
                                      "(pip install 'openclaw[local]'): %(error)s")
                                    % {"error": exc}) from None
        device = self._pick_device(torch)
        if self.config.params.get("torch_threads"):
            torch.set_num_threads(int(self.config.params["torch_threads"]))  # process-wide
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, **self._dtype(device))
            # PreTrainedModel.to is @wraps(torch.nn.Module.to): typeshed's _Wrapped loses
            # that it is a method, so mypy takes the device for ``self``.
            model = model.to(device).eval()  # type: ignore[arg-type]  # @wraps on a method
        except Exception as exc:  # a broken folder fails in many ways (OSError, ValueError...)
            raise EngineUnavailable(_("cannot load the model in %(folder)s: %(error)s")
                                    % {"folder": folder,
                                       "error": f"{type(exc).__name__}: {exc}"}) from None
        self._install(model, tokenizer, device)

    def _dtype(self, device: str) -> dict[str, Any]:
        """``params.dtype`` ("auto", "bfloat16"...); by default the checkpoint's on a GPU."""
        dtype = self.config.params.get("dtype") or ("auto" if device != "cpu" else None)
        if dtype is None:
            return {}
        # transformers: heavy and optional (the local extra), loaded only where a model runs
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
        self._explicit_mask = full_attention_sdpa(model.config)
        logger.info("%s: %s, %s, explicit 4D mask: %s", self.config.name,
                    type(model).__name__, model.dtype, self._explicit_mask)

    def _folder(self) -> Path:
        if not self.config.path:
            raise EngineUnavailable(_("%(model)s: no model folder configured (path)")
                                    % {"model": self.config.name})
        folder = Path(self.config.path).expanduser()
        if not folder.is_dir():
            raise EngineUnavailable(_("model folder %(folder)s does not exist or is not a "
                                      "folder") % {"folder": folder})
        if not (folder / "config.json").is_file():
            raise EngineUnavailable(_("model folder %(folder)s has no config.json: not a "
                                      "Hugging Face model folder") % {"folder": folder})
        return folder

    def _pick_device(self, torch: Any) -> str:
        gpu = self.config.gpu_id
        if gpu is None:
            return "cpu"
        if not torch.cuda.is_available():
            raise EngineUnavailable(_("%(model)s: gpu_id %(gpu)s is set but CUDA is not "
                                      "available in this worker")
                                    % {"model": self.config.name, "gpu": gpu})
        if gpu >= torch.cuda.device_count():
            raise EngineUnavailable(_("%(model)s: gpu_id %(gpu)s does not exist (GPUs "
                                      "visible: %(count)d)")
                                    % {"model": self.config.name, "gpu": gpu,
                                       "count": torch.cuda.device_count()})
        return f"cuda:{gpu}"

    @staticmethod
    def _eos_ids(tokenizer: Any, model: Any) -> frozenset[int]:
        ids = {tokenizer.eos_token_id}
        configured = getattr(model.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return frozenset(i for i in ids if i is not None)

    # Requests ------------------------------------------------------------------

    def prompt_ids(self, messages: list[dict[str, Any]],
                   tools: list[dict[str, Any]] | None = None) -> list[int]:
        """The prompt's token ids: the chat template (with ``tools`` as the endpoint's
        ``tool_format`` says), or "role: content" lines without one."""
        tokenizer = self._tokenizer
        if uses_tool_template(self.config.tool_format, messages, tools):
            return tool_prompt_ids(tokenizer, messages, tools, self.config.tool_format)
        turns = [{"role": m.get("role", "user"), "content": message_content(m)} for m in messages]
        if getattr(tokenizer, "chat_template", None):
            try:
                ids = tokenizer.apply_chat_template(turns, add_generation_prompt=True)
            except Exception as exc:  # jinja errors: roles the template refuses, etc.
                raise BadRequest(_("the chat template rejected the messages: %(error)s")
                                 % {"error": exc}) from None
            return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        text = "".join(f"{t['role']}: {t['content']}\n" for t in turns) + "assistant:"
        return list(tokenizer(text)["input_ids"])

    def _check_context(self, prompt_tokens: int, max_tokens: int) -> None:
        window = self.config.context_window
        if prompt_tokens + max_tokens > window:
            raise ContextTooLong(_("%(model)s: %(prompt)d prompt tokens + max_tokens "
                                   "%(max_tokens)d exceed the context window of %(window)d "
                                   "tokens")
                                 % {"model": self.config.name, "prompt": prompt_tokens,
                                    "max_tokens": max_tokens, "window": window})

    def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        """The request's deltas, its tool calls read out of the text (``with_tool_calls``)."""
        return with_tool_calls(self.config, request, self._stream(request))

    async def _stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
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

    async def _submit(self, request: ChatRequest) -> Job:
        await self.load()
        prompt = self.prompt_ids(request.messages, tools_in_play(self.config, request))
        sampling = resolve_sampling(self.config, request)
        self._check_context(len(prompt), sampling.max_tokens)
        job = Job(request.request_id, prompt, sampling, self._detokenizer(),
                   generator=self._generator(sampling))
        self._ensure_batcher()
        self._live.add(job)
        assert self._pending is not None  # made by _ensure_batcher
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
        # torch: heavy and optional (the local extra), loaded only where a model runs
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
        # Made from the first request's task: its language is not the batch's. An error
        # for a request is built in that request's language (``Job.language``).
        translation.deactivate()
        while not self._closing:
            jobs = await self._collect()
            if jobs:
                await self._run(jobs)

    async def _collect(self) -> list[Job]:
        """The first waiting request and those that come within the batching window."""
        assert self._pending is not None  # made with the batcher that runs this
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

    async def _next_pending(self, deadline: float) -> Job | None:
        assert self._pending is not None  # made with the batcher that runs this
        if not self._pending.empty():
            return self._pending.get_nowait()
        timeout = deadline - asyncio.get_running_loop().time()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self._pending.get(), timeout)
        except TimeoutError:
            return None

    async def _run(self, jobs: list[Job]) -> None:
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
                    with translation.override(job.language):
                        job.queue.put_nowait(self._closed() if self._closing
                                             else as_engine_error(exc))

    # The generation thread -----------------------------------------------------

    async def _in_thread(self, function: Callable[..., None], *args: Any) -> None:
        await in_thread(function, *args, executor=self._thread)

    def _generate(self, jobs: list[Job]) -> None:
        """Decode the batch to its end, one forward pass per step for all its rows."""
        # torch: heavy and optional (the local extra), loaded only where a model runs
        import torch

        with torch.inference_mode():
            batch = Batch(jobs, self._pad_id, self._device, self._explicit_mask)
            while True:
                self._post([(job, self._drop(job)) for job in batch.jobs
                            if job.cancelled and not job.done])
                batch.compact()
                if not batch.jobs:
                    return
                if self._closing:
                    raise self._closed()
                self._step(batch)

    def _drop(self, job: Job) -> Delta:
        """End a cancelled sequence (``cancel()`` or a consumer that went away)."""
        self.stats.dropped += 1
        return job.finish("cancelled")

    def _step(self, batch: Batch) -> None:
        out = self._model(input_ids=batch.input_ids, attention_mask=batch.attention_mask(),
                          position_ids=batch.positions, past_key_values=batch.past,
                          use_cache=True, **self._forward_extra)
        self.stats.steps += 1
        batch.past = out.past_key_values
        tokens = self._pick_tokens(out.logits[:, -1, :], batch.jobs)
        outbox: list[tuple[Job, Delta | EngineError]] = []
        for job, token in zip(batch.jobs, tokens, strict=True):
            delta = job.accept(token, self._eos)
            if delta is not None:
                outbox.append((job, delta))
        self._post(outbox)
        batch.advance(tokens)

    @staticmethod
    def _pick_tokens(logits: torch.Tensor, jobs: list[Job]) -> list[int]:
        tokens = logits.argmax(dim=-1).tolist()
        for row, job in enumerate(jobs):
            if job.sampling.temperature:
                tokens[row] = sample(logits[row], job.sampling, job.generator)
        return tokens

    def _post(self, outbox: list[tuple[Job, Delta | EngineError]]) -> None:
        """Hand a step's deltas to the loop in one hop."""
        if outbox:
            assert self._loop is not None  # a batch runs only after _ensure_batcher
            self._loop.call_soon_threadsafe(deliver, outbox)

    # Unloading -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the batcher (a running batch fails at its next step) and free the model."""
        self._closing = True
        batcher = self._batcher
        if batcher is not None and not batcher.done():
            # Made together with the batcher.
            assert self._loop is not None and self._pending is not None
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
                with translation.override(job.language):
                    job.queue.put_nowait(self._closed())

    def _closed(self) -> EngineUnavailable:
        return EngineUnavailable(_("%(model)s: the engine was closed")
                                 % {"model": self.config.name})

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
