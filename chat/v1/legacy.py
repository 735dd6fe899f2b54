"""``POST /v1/completions``: OpenAI's legacy text completions, on the one chat core
(``chat.v1.calls``): each prompt is sent as the user's message and each answer comes
back as OpenAI's ``text_completion`` — whole or streamed, ``n`` choices a prompt,
``echo`` putting the prompt before the text, ``logprobs`` (an integer) in the legacy
shape. What cannot be given is refused with a 400 naming it: ``suffix`` (insertion),
a ``best_of`` other than ``n``, token-id prompts (no backend here shares OpenAI's
tokenizer), several prompts in one stream."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from django.http import HttpResponseBase, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from inference.engines.base import ChatRequest, Choice, Delta, Usage
from inference.errors import EngineError
from plugins.base import PluginBlocked
from plugins.chain import StreamFilter
from routing.gateway import GatewayError, GatewayMeta
from routing.keys import KeyRefused
from routing.rules import estimate_tokens

from . import validation
from .auth import admit, authenticate, refused, rotation_notice
from .calls import Call
from .completions import failure, stream_answer, with_meta
from .validation import InvalidBody
from .wire import (
    SSE_DONE,
    ApiRequest,
    body_and_model,
    error_body,
    error_response,
    sse_event,
)
from .wire import usage_dict as usage_body

MAX_PROMPTS = 16  # answered concurrently, one model call each
MAX_LEGACY_LOGPROBS = 5  # OpenAI's bound
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint
PASSED_ON = ("n", "presence_penalty", "frequency_penalty", "logit_bias", "user", "seed")


@dataclass
class TextRequest:
    model: str
    prompts: list[str]
    stream: bool
    include_usage: bool
    echo: bool
    chat: ChatRequest  # of the first prompt; the others differ only in their message


def parse_completions_body(raw: bytes) -> TextRequest:
    """A legacy completions body, or ``InvalidBody`` naming the parameter."""
    body, model = body_and_model(raw)
    prompts = _prompts(body.get("prompt"))
    if body.get("suffix") is not None:
        raise InvalidBody(_("“suffix” (text inserted before an ending) is not supported "
                            "here."), "suffix")
    n = validation.integer(body, "n", 1, validation.MAX_N) or 1
    if validation.integer(body, "best_of", 1, validation.MAX_N) not in (None, n):
        raise InvalidBody(_("“best_of” other than “n” is not supported here."), "best_of")
    logprobs = validation.integer(body, "logprobs", 0, MAX_LEGACY_LOGPROBS)
    stream = validation.boolean(body, "stream") or False
    if stream and len(prompts) > 1:
        raise InvalidBody(_("Stream one prompt at a time."), "prompt")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidBody(_("“stream_options” must be an object."), "stream_options")
    extra: dict[str, Any] = {name: body[name] for name in PASSED_ON if name in body}
    if logprobs is not None:
        extra.update(logprobs=True, top_logprobs=logprobs)
    chat = ChatRequest(
        messages=[{"role": "user", "content": prompts[0]}],
        max_tokens=validation.integer(body, "max_tokens", 1, validation.MAX_TOKENS)
        or DEFAULT_MAX_TOKENS,
        temperature=validation.number(body, "temperature", 0.0, 2.0),
        top_p=validation.number(body, "top_p", 0.0, 1.0),
        stop=validation.stop(body),
        seed=validation.integer(body, "seed", *validation.SEED_RANGE), extra=extra,
        request_id=f"cmpl-{uuid.uuid4().hex}")
    return TextRequest(model, prompts, stream, bool(options.get("include_usage")),
                       validation.boolean(body, "echo") or False, chat)


def _prompts(raw: Any) -> list[str]:
    prompts = [raw] if isinstance(raw, str) else raw
    if not isinstance(prompts, list) or not prompts:
        raise InvalidBody(_("“prompt” must be a string or a list of strings."), "prompt")
    if all(isinstance(p, int) and not isinstance(p, bool) for p in prompts) or all(
            isinstance(p, list) for p in prompts):
        raise InvalidBody(_("Token-id prompts are not supported here: send the text."),
                          "prompt")
    if len(prompts) > MAX_PROMPTS or not all(isinstance(p, str) for p in prompts):
        raise InvalidBody(_("“prompt” must be a string or a list of at most %(n)d strings.")
                          % {"n": MAX_PROMPTS}, "prompt")
    return prompts


# --- answers ---------------------------------------------------------------------------


def legacy_logprobs(entries: dict[str, Any] | None, offset: int) -> dict[str, Any] | None:
    """Chat logprobs (``{"content": [{token, logprob, top_logprobs}]}``) in the legacy
    shape: parallel lists of tokens, their logprobs, the alternatives, text offsets."""
    if not entries or not isinstance(entries.get("content"), list):
        return None
    tokens, logprobs, tops, offsets = [], [], [], []
    for entry in entries["content"]:
        tokens.append(entry.get("token", ""))
        logprobs.append(entry.get("logprob"))
        tops.append({alt.get("token", ""): alt.get("logprob")
                     for alt in entry.get("top_logprobs") or []})
        offsets.append(offset)
        offset += len(entry.get("token", ""))
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops,
            "text_offset": offsets}


def text_choice(choice: Choice, index: int, prompt: str, echo: bool) -> dict[str, Any]:
    head = prompt if echo else ""
    return {"text": head + (choice.text or ""), "index": index,
            "logprobs": legacy_logprobs(choice.logprobs, len(head)),
            "finish_reason": choice.finish_reason or "stop"}


def text_body(request_id: str, model: str, choices: list[dict[str, Any]],
              usage: Usage, **fields: Any) -> dict[str, Any]:
    return {"id": request_id, "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": choices, "usage": usage_body(usage), **fields}


# --- the view --------------------------------------------------------------------------


@csrf_exempt
@require_POST
@rotation_notice
async def completions(request: ApiRequest) -> HttpResponseBase:
    """OpenAI's legacy completions through the chat core."""
    started = time.perf_counter()
    try:
        try:
            text = parse_completions_body(request.body)
        except InvalidBody:
            await authenticate(request)  # a refused key is reported before a bad body
            raise
        estimate = estimate_tokens([{"role": "user", "content": p} for p in text.prompts])
        ticket = await admit(request, text.model, estimate,
                             (text.chat.max_tokens or 0) * len(text.prompts))
    except KeyRefused as exc:
        return with_meta(refused(exc), None)
    except InvalidBody as exc:
        return with_meta(error_response(400, exc.message, "invalid_request", exc.param), None)
    try:
        calls = [await Call.begin(ticket, text.model, replace(text.chat, messages=[
            {"role": "user", "content": prompt}]), "completions", started, request.headers)
            for prompt in text.prompts]
    except PluginBlocked as exc:
        return with_meta(error_response(400, exc.message, "content_blocked"), None)
    if text.stream:
        return await _stream(calls[0], text)
    return await _whole(calls, text, request)


async def _whole(calls: list[Call], text: TextRequest,
                 request: ApiRequest) -> HttpResponseBase:
    outcomes = await asyncio.gather(*(call.complete(request.headers) for call in calls),
                                    return_exceptions=True)
    choices: list[dict[str, Any]] = []
    usage, meta, fields = Usage(), GatewayMeta(), {}
    for number, (call, outcome) in enumerate(zip(calls, outcomes, strict=True)):
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            after = call.after_plugins(outcome)
        except (GatewayError, EngineError, PluginBlocked) as exc:
            response = failure(exc)
            call.finish(meta, None, response.status_code)
            return with_meta(response, None)
        meta, fields = outcome.meta, outcome.completion.fields
        per_prompt = len(after)
        choices += [text_choice(choice, number * per_prompt + choice.index, text.prompts[number],
                                text.echo) for choice in after]
        usage = Usage(usage.prompt_tokens + outcome.completion.usage.prompt_tokens,
                      usage.completion_tokens + outcome.completion.usage.completion_tokens)
        call.finish(outcome.meta, outcome.completion.usage, 200, cached=outcome.cached)
    return with_meta(JsonResponse(text_body(text.chat.request_id, meta.model, choices, usage,
                                            **fields)), meta)


async def _stream(call: Call, text: TextRequest) -> HttpResponseBase:
    return await stream_answer(
        call, lambda meta, first, deltas, ttft_s: _TextStream(call, text, meta).events(
            first, deltas, ttft_s))


class _TextStream:
    """A streamed text completion: ``text_completion`` chunks, the plugins' stream
    hooks per choice, a finish chunk per choice, the usage when asked, ``[DONE]``."""

    def __init__(self, call: Call, text: TextRequest, meta: GatewayMeta):
        self.call, self.text, self.meta = call, text, meta
        self.screens: dict[int, StreamFilter] = {}
        self.finishes: dict[int, str] = {}
        self.usage: Usage | None = None
        self.counted = 0
        self.status = 200

    def chunk(self, index: int, piece: str, finish: str | None = None,
              logprobs: dict[str, Any] | None = None) -> bytes:
        return sse_event({"id": self.text.chat.request_id, "object": "text_completion",
                          "created": int(time.time()), "model": self.meta.model,
                          "choices": [{"text": piece, "index": index, "logprobs": logprobs,
                                       "finish_reason": finish}]})

    async def events(self, first: Delta | None, deltas: AsyncIterator[Delta],
                     ttft_s: float) -> AsyncIterator[bytes]:
        try:
            async for event in self._events(first, deltas):
                yield event
        finally:
            usage = self.usage or Usage(estimate_tokens(self.call.chat.messages), self.counted)
            self.call.finish(self.meta, usage, self.status, ttft_s=ttft_s)

    async def _events(self, first: Delta | None,
                      deltas: AsyncIterator[Delta]) -> AsyncIterator[bytes]:
        try:
            delta = first
            while delta is not None:
                if delta.index not in self.screens:
                    self.screens[delta.index] = self.call.screen()
                    if self.text.echo:
                        yield self.chunk(delta.index, self.text.prompts[0])
                if delta.text:
                    self.counted += delta.tokens or 1
                    if piece := self.screens[delta.index].feed(delta.text):
                        yield self.chunk(delta.index, piece,
                                         logprobs=legacy_logprobs(delta.logprobs, 0))
                if delta.finish_reason:
                    self.finishes[delta.index] = delta.finish_reason
                self.usage = delta.usage or self.usage
                delta = await anext(deltas, None)
        except (EngineError, GatewayError) as exc:
            self.status = exc.http_status if isinstance(exc, EngineError) else exc.status
            yield sse_event(error_body(self.status, exc.message, exc.code)) + SSE_DONE
            return
        except PluginBlocked as exc:
            self.status = 400
            yield sse_event(error_body(400, exc.message, "content_blocked")) + SSE_DONE
            return
        for index in sorted(self.screens) or [0]:
            rest = self.screens[index].flush() if index in self.screens else ""
            yield self.chunk(index, rest, self.finishes.get(index) or "stop")
        if self.text.include_usage:
            usage = self.usage or Usage(estimate_tokens(self.call.chat.messages), self.counted)
            yield sse_event({"id": self.text.chat.request_id, "object": "text_completion",
                             "created": int(time.time()), "model": self.meta.model,
                             "choices": [], "usage": usage_body(usage)})
        yield SSE_DONE
