"""One model call of a ``/v1`` surface after admission — the one core that chat
completions, legacy completions, the Responses API and Anthropic's Messages share: the
plugins' pre hooks, the routing facts, the gateway (a whole answer, a cached one or a
stream), the plugins' post hooks, the key's token counters, the overhead metric and
the usage record. A surface parses its wire format into a ``ChatRequest``, runs a
``Call`` and writes its own format back, so every backend serves every surface and
every rule, limit and plugin applies to all of them alike."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from core import metrics
from inference.engines.base import ChatRequest, Choice, Completion, Delta, Usage
from plugins.base import PluginBlocked, PluginRequest, PluginResponse
from plugins.chain import PluginChain, StreamFilter, aget_chain
from routing import gateway, response_cache
from routing.admission import Ticket
from routing.gateway import GatewayMeta
from routing.key_models import ApiKey
from routing.rules import RequestFacts, estimate_tokens
from routing.usage import log_usage

ROUTES = {"chat": "/v1/chat/completions", "completions": "/v1/completions",
          "responses": "/v1/responses", "messages": "/v1/messages"}


@dataclass
class Outcome:
    """A whole answer: the completion, how it was routed, whether from the cache."""

    completion: Completion
    meta: GatewayMeta
    cache: str | None = None  # "hit" or "miss" when the request may be cached

    @property
    def cached(self) -> bool:
        return self.cache == response_cache.HIT


@dataclass
class Call:
    ticket: Ticket  # the request's admission, settled by ``finish``
    chat: ChatRequest  # as the plugins' pre hooks left it
    plugged: PluginRequest
    chain: PluginChain
    facts: RequestFacts
    surface: str  # a key of ROUTES; the usage records' endpoint
    started: float
    deadline_s: float | None = None

    @property
    def key(self) -> ApiKey:
        return self.ticket.api_key

    @classmethod
    async def begin(cls, ticket: Ticket, model: str, chat: ChatRequest, surface: str,
                    started: float, headers: Mapping[str, str]) -> Call:
        """Run the pre hooks (``PluginBlocked`` refuses, and the admission's reservation
        is given back) and take the routing facts."""
        key = ticket.api_key
        chain = await aget_chain()
        try:
            plugged = chain.pre_process(PluginRequest(
                messages=chat.messages, model=model, user=str(key.owner_id or ""),
                api_key=key.prefix, surface="api"))
        except PluginBlocked:
            ticket.settle_soon(0)
            raise
        facts = RequestFacts(model=plugged.model, messages=plugged.messages,
                             api_key=key.prefix, user=plugged.user,
                             flags=frozenset(plugged.flags))
        return cls(ticket, replace(chat, messages=plugged.messages), plugged, chain, facts,
                   surface, started, gateway.deadline_from_headers(headers))

    # --- a whole answer

    async def complete(self, headers: Mapping[str, str]) -> Outcome:
        """The answer: from the response cache when the request may be (temperature 0,
        not refused by the key or ``Cache-Control``), else from the gateway, kept."""
        cache_key = None
        if response_cache.enabled_for(self.key) and not response_cache.bypassed(headers):
            cache_key = response_cache.cache_key(self.facts.model, self.chat.messages,
                                                 response_cache.chat_params(self.chat))
        if cache_key is not None and (cached := await response_cache.aget(cache_key)):
            return self._from_cache(cached)
        completion, meta = await gateway.complete(self.facts, self.chat, self.deadline_s)
        if cache_key is not None:
            await response_cache.aput(cache_key, {"completion": dataclasses.asdict(completion),
                                                  "model": meta.model, "route": meta.route})
            return Outcome(completion, meta, response_cache.MISS)
        return Outcome(completion, meta)

    def _from_cache(self, cached: dict[str, Any]) -> Outcome:
        """A kept answer: no model runs, no token is counted."""
        data = dict(cached["completion"])
        data["usage"] = Usage(**data["usage"])
        data["more"] = [Choice(**choice) for choice in data["more"]]
        meta = GatewayMeta(model=cached["model"], route_override=f"cache; {cached['route']}")
        return Outcome(Completion(**data), meta, response_cache.HIT)

    def after_plugins(self, outcome: Outcome) -> list[Choice]:
        """Each choice as the plugins' post hooks leave it (they see its tool calls);
        ``PluginBlocked`` refuses the answer."""
        choices = []
        for choice in outcome.completion.choices:
            answer = self.chain.post_process(PluginResponse(
                content=choice.text or "", model=outcome.meta.model, request=self.plugged,
                tool_calls=choice.tool_calls))
            text = answer.content if answer.content or choice.text is not None else None
            choices.append(replace(choice, text=text, tool_calls=answer.tool_calls))
        return choices

    # --- a stream

    def stream(self, meta: GatewayMeta) -> AsyncIterator[Delta]:
        """The gateway's deltas; ``meta`` is filled before the first."""
        return gateway.stream(self.facts, self.chat, meta, self.deadline_s)

    def screen(self) -> StreamFilter:
        """A fresh pass of the plugins' stream hooks (one per streamed choice)."""
        return self.chain.stream_filter(self.plugged)

    # --- the end

    def finish(self, meta: GatewayMeta, usage: Usage | None, status: int, *,
               ttft_s: float | None = None, cached: bool = False) -> None:
        """Settle the admission with the tokens used (none for a cached answer or a
        failure), observe the overhead and log the usage — written by a Celery task later."""
        self.ticket.settle_soon(usage.total_tokens if usage is not None and not cached else 0)
        if status == 200 or status == 499:
            metrics.observe_overhead(ROUTES[self.surface], meta.overhead_ms() / 1000)
        log_usage(key_prefix=self.key.prefix, user=str(self.key.owner_id or ""),
                  model=meta.model, instance=meta.instance_id,
                  tokens_in=usage.prompt_tokens if usage and not cached else 0,
                  tokens_out=usage.completion_tokens if usage and not cached else 0,
                  latency_ms=(time.perf_counter() - self.started) * 1000,
                  ttft_ms=ttft_s * 1000 if ttft_s is not None else None, status=status,
                  endpoint=f"{self.surface}-cache" if cached else self.surface,
                  request_id=self.chat.request_id)


class CallStream:
    """What a surface's streamed answer shares: the tokens it counted, its status, and
    — however the stream ends — the call finished with the backend's usage, else the
    prompt's estimate and the pieces sent (a stream the client left is logged 499).
    A surface writes its own events in ``_events``."""

    def __init__(self, call: Call, meta: GatewayMeta):
        self.call, self.meta = call, meta
        self.usage: Usage | None = None
        self.counted = 0
        self.status = 200

    @property
    def final_usage(self) -> Usage:
        return self.usage or Usage(estimate_tokens(self.call.chat.messages), self.counted)

    async def events(self, first: Delta | None, deltas: AsyncIterator[Delta],
                     ttft_s: float) -> AsyncIterator[bytes]:
        try:
            async for event in self._events(first, deltas):
                yield event
        except BaseException:
            self.status = 499  # the client went away: the stream was cancelled
            raise
        finally:
            self.call.finish(self.meta, self.final_usage, self.status, ttft_s=ttft_s)

    def _events(self, first: Delta | None, deltas: AsyncIterator[Delta]) -> AsyncIterator[bytes]:
        raise NotImplementedError
