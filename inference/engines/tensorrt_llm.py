"""The ``tensorrt_llm`` engine: TensorRT-LLM 1.2's LLM API inside a GPU worker.

Written against the documented API only (DESIGN.md, "Platform facts"):
``LLM(model=...)``, ``SamplingParams(max_tokens=..., ...)``,
``llm.tokenizer.apply_chat_template``, ``llm.generate_async(prompt, sp,
streaming=True)`` yielding RequestOutputs with ``outputs[0].text_diff`` and
``finished``, ``RequestOutput.abort()`` and ``llm.shutdown()``. Attributes
beyond those are read with ``getattr`` and a comment says why.

One worker process serves one GPU: ``load()`` sets ``CUDA_VISIBLE_DEVICES`` to
the endpoint's ``gpu_id`` before importing TensorRT-LLM and building the LLM
(once per engine object; the worker's pool keeps it), and refuses an endpoint
on another GPU once the variable is set, since CUDA reads it only when it
starts. Run one worker (solo or threads pool, never prefork after the load)
per GPU. ``params.llm_args`` (a dict) is passed to ``LLM(...)`` as keyword
arguments, as the operator gives them (TensorRT-LLM's ``LlmArgs``, e.g.
``max_batch_size``); nothing else is passed.

The tests run it against a stand-in package (``tests/stand_ins``) since
TensorRT-LLM needs an NVIDIA GPU; ``test_real_tensorrt_llm_on_gpu`` runs it on
the real library where there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext as _

from ..errors import ContextTooLong, EngineError, EngineUnavailable, ServerError
from ..registry import register_engine
from ..tool_parsing import tools_in_play, with_tool_calls
from ..tool_templates import tool_prompt_text, uses_tool_template
from .base import ChatRequest, Delta, EndpointConfig, Usage, in_thread
from .local import LocalEngine

logger = logging.getLogger(__name__)

CANCELLED = "cancelled"  # finish_reason of a stream stopped by cancel()
_CONTEXT_MESSAGE = re.compile(r"context|max_seq_len|max_input_len|too long|exceeds", re.I)


@dataclass
class _Running:
    """A request being generated: what ``cancel`` needs to stop it."""

    output: Any  # the RequestOutput that generate_async returned
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


@register_engine("tensorrt_llm", runs_in="worker")
class TensorRTLLMEngine(LocalEngine):
    """A model folder (Hugging Face checkpoint or engine dir) served by TensorRT-LLM."""

    def __init__(self, config: EndpointConfig):
        super().__init__(config)
        self._llm: Any = None
        self._sampling_params: Any = None  # the SamplingParams class
        self._load_lock = asyncio.Lock()
        self._running: dict[str, _Running] = {}

    # -- the interface

    async def load(self) -> None:
        """Pin the GPU, import TensorRT-LLM and build the LLM (in a thread: it takes minutes)."""
        async with self._load_lock:
            if self._llm is None:
                self._llm, self._sampling_params = await in_thread(self._build)

    def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        """The request's deltas, its tool calls read out of the text (``with_tool_calls``)."""
        return with_tool_calls(self.config, request, self._stream(request))

    async def _stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        """One delta per ``text_diff``; the last has finish_reason and usage."""
        await self.load()
        prompt = self._prompt(request)
        try:
            output = self._llm.generate_async(prompt, self._params(request), streaming=True)
        except Exception as exc:  # the library's own checks of the request
            raise self._error(exc) from exc
        request_id = request.request_id or f"anonymous-{id(output)}"
        running = self._running[request_id] = _Running(output)
        finished = False
        try:
            async for delta in self._deltas(running):
                finished = delta.finish_reason is not None
                yield delta
        except EngineError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        finally:
            self._running.pop(request_id, None)
            if not finished:  # the caller stopped reading, or it failed: free the slot
                with contextlib.suppress(Exception):
                    output.abort()

    async def cancel(self, request_id: str) -> None:
        """Abort the request; its stream ends at once with finish_reason "cancelled"."""
        running = self._running.get(request_id)
        if running is not None:
            running.output.abort()
            running.cancelled.set()

    async def aclose(self) -> None:
        """Stop the running requests and shut the LLM down (its executor and GPU memory)."""
        for request_id in list(self._running):
            await self.cancel(request_id)
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown)

    # -- helpers

    def _prompt(self, request: ChatRequest) -> str:
        """The chat template's text; with the tools when the endpoint has a tool format."""
        tokenizer, tool_format = self._llm.tokenizer, self.config.tool_format
        tools = tools_in_play(self.config, request)
        if uses_tool_template(tool_format, request.messages, tools):
            return tool_prompt_text(tokenizer, request.messages, tools, tool_format)
        return tokenizer.apply_chat_template(_text_messages(request.messages), tokenize=False,
                                             add_generation_prompt=True)

    def _build(self) -> tuple[Any, Any]:
        _pin_gpu(self.config)
        try:
            # tensorrt_llm: the gpu extra, importable only on an NVIDIA GPU node
            from tensorrt_llm import LLM, SamplingParams
        except ImportError as exc:
            raise EngineUnavailable(_("TensorRT-LLM is not installed: pip install -e '.[gpu]' "
                                      "on an NVIDIA GPU node")) from exc
        llm = LLM(model=self.config.path, **dict(self.config.params.get("llm_args") or {}))
        logger.info("%s: TensorRT-LLM loaded %s on GPU %s", self.config.name, self.config.path,
                    self.config.gpu_id)
        return llm, SamplingParams

    def _params(self, request: ChatRequest) -> Any:
        """SamplingParams from the request, else the endpoint's defaults.

        ``max_tokens`` is always given: TensorRT-LLM's default is only 32.
        """
        defaults = self.config.params

        def pick(name: str, value: Any) -> Any:
            return value if value is not None else defaults.get(name)

        values = {"temperature": pick("temperature", request.temperature),
                  "top_p": pick("top_p", request.top_p),
                  "top_k": pick("top_k", request.extra.get("top_k")),
                  "seed": pick("seed", request.seed), "stop": pick("stop", request.stop)}
        return self._sampling_params(
            max_tokens=request.max_tokens or self.config.max_output_tokens,
            **{name: value for name, value in values.items() if value is not None})

    async def _deltas(self, running: _Running) -> AsyncIterator[Delta]:
        counted = pending = 0
        prompt_tokens = None
        async for out in _until_cancelled(running):
            completion = out.outputs[0]
            # token_ids and prompt_token_ids: "when present" (usage and the window check).
            token_ids = getattr(completion, "token_ids", None)
            new = len(token_ids) - counted if token_ids is not None else 1
            counted, pending = counted + new, pending + new
            if prompt_tokens is None:
                prompt_tokens = len(getattr(out, "prompt_token_ids", None) or ())
                self._check_window(prompt_tokens)
            if completion.text_diff:
                yield Delta(text=completion.text_diff, tokens=pending)
                pending = 0
            if out.finished:
                # finish_reason: "stop", "length", "cancelled" when present.
                reason = getattr(completion, "finish_reason", None) or "stop"
                yield Delta(tokens=pending, finish_reason=reason,
                            usage=Usage(prompt_tokens or 0, counted))
                return
        # cancel() was called (or the outputs ended without a finished one).
        reason = CANCELLED if running.cancelled.is_set() else "stop"
        yield Delta(tokens=pending, finish_reason=reason, usage=Usage(prompt_tokens or 0, counted))

    def _check_window(self, prompt_tokens: int) -> None:
        """After the first output (the prompt's length is known then); stream() aborts it."""
        if prompt_tokens >= self.config.context_window:
            raise ContextTooLong(_("%(model)s: the prompt has %(prompt)d tokens; the context "
                                   "window is %(window)d")
                                 % {"model": self.config.name, "prompt": prompt_tokens,
                                    "window": self.config.context_window})

    def _error(self, exc: Exception) -> EngineError:
        message = _("%(model)s: TensorRT-LLM: %(error)s") % {"model": self.config.name,
                                                             "error": exc}
        if isinstance(exc, ValueError) and _CONTEXT_MESSAGE.search(str(exc)):
            return ContextTooLong(message)
        return ServerError(message)


def _pin_gpu(config: EndpointConfig) -> None:
    """``CUDA_VISIBLE_DEVICES=<gpu_id>`` for this process, before CUDA starts."""
    if config.gpu_id is None:
        raise EngineUnavailable(_("%(model)s: TensorRT-LLM runs on a GPU: give the endpoint a "
                                  "gpu_id (0 for the first)") % {"model": config.name})
    wanted = str(config.gpu_id)
    current = os.environ.get("CUDA_VISIBLE_DEVICES")
    if current is None:
        os.environ["CUDA_VISIBLE_DEVICES"] = wanted
    elif current != wanted:
        raise EngineUnavailable(
            _("%(model)s wants GPU %(gpu)s, but this worker process sees only "
              "CUDA_VISIBLE_DEVICES=%(visible)s: a worker serves one GPU; start one worker per "
              "GPU (its CUDA_VISIBLE_DEVICES unset or set to that GPU)")
            % {"model": config.name, "gpu": wanted, "visible": current})


async def _until_cancelled(running: _Running) -> AsyncIterator[Any]:
    """The request's outputs, until the last one or until ``cancel()`` (whichever is first).

    Waiting on the cancel event as well means a cancelled stream ends at once,
    whatever the library still sends for an aborted request.
    """
    iterator = running.output.__aiter__()
    stop = asyncio.ensure_future(running.cancelled.wait())
    step = None
    try:
        while not running.cancelled.is_set():
            step = asyncio.ensure_future(_advance(iterator))
            await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                return
            out = step.result()
            if out is None:
                return
            yield out
    finally:
        for task in (stop, step):
            if task is not None and not task.done():
                task.cancel()


def _text_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages whose content is a string (OpenAI content parts joined), for the template."""
    plain = []
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        plain.append({**message, "content": content})
    return plain


async def _advance(iterator) -> Any:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return None
