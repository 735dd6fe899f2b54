"""The gateway as a LangChain chat model, for graphs of one's own: LangGraph's
``messages`` stream mode carries its tokens, ``routing.gateway.stream`` (rules,
balancing, failover) behind ``BaseChatModel._astream``, each delta passed through the
plugins' stream filter when one is given. (The conversation graph's own nodes call
the gateway directly and write tokens to the custom stream: no callback machinery
between the engine and the studio.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any, cast

from asgiref.sync import async_to_sync
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage, convert_to_openai_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, SkipValidation

from inference.engines.base import ChatRequest
from routing import gateway
from routing.gateway import GatewayMeta
from routing.rules import RequestFacts


class GatewayChatModel(BaseChatModel):
    """One routed generation. ``facts`` are the routing facts (their messages are
    replaced by the ones the model is called with), ``request`` the sampling
    parameters; ``meta`` is filled in by the gateway (who answered, what was tried);
    ``stream_filter`` is the plugin chain's filter for this request, or None."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    # Kept as given (not copied by validation): the caller reads ``meta`` afterwards.
    facts: SkipValidation[RequestFacts]
    request: SkipValidation[ChatRequest]
    meta: SkipValidation[GatewayMeta]
    stream_filter: Any = None
    deadline_s: float | None = None
    finish_reason: str | None = None

    @property
    def _llm_type(self) -> str:
        return "openclaw-gateway"

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        wire = convert_to_openai_messages(messages)
        facts = replace(self.facts, messages=wire)
        request = replace(self.request, messages=wire, stop=stop or self.request.stop)
        usage = None
        async for delta in gateway.stream(facts, request, self.meta, self.deadline_s):
            self.finish_reason = delta.finish_reason or self.finish_reason
            usage = delta.usage or usage
            text = self.stream_filter.feed(delta.text) if self.stream_filter else delta.text
            if text:
                yield ChatGenerationChunk(message=AIMessageChunk(content=text))
        tail = self.stream_filter.flush() if self.stream_filter else ""
        usage_metadata = None if usage is None else UsageMetadata(
            input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens)
        yield ChatGenerationChunk(
            message=AIMessageChunk(content=tail, usage_metadata=usage_metadata,
                                   response_metadata={"finish_reason": self.finish_reason,
                                                      "model_name": self.meta.model}))

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        merged: ChatGenerationChunk | None = None
        async for chunk in self._astream(messages, stop, run_manager, **kwargs):
            merged = chunk if merged is None else merged + chunk
        assert merged is not None  # _astream always yields its closing chunk
        return ChatResult(generations=[ChatGeneration(message=merged.message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        # Sync callers (scripts, LangChain's invoke) get the whole answer as one chunk.
        result = async_to_sync(self._agenerate)(messages, stop, None, **kwargs)
        message = cast(AIMessageChunk, result.generations[0].message)  # _astream's, merged
        yield ChatGenerationChunk(message=AIMessageChunk(
            content=message.content, usage_metadata=message.usage_metadata))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        return async_to_sync(self._agenerate)(messages, stop, None, **kwargs)
