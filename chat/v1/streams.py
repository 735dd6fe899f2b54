"""A streamed chat completion as OpenAI streams it: each delta becomes a
``chat.completion.chunk`` — its text through the plugins' stream hooks (one filter per
choice), tool-call fragments, refusals and logprobs as the backend sent them — then a
finish chunk per choice, OpenClaw's ``x_openclaw`` on the last, the usage chunk when
asked for, and ``[DONE]``. A failure after the first delta becomes an error event."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from inference.engines.base import Delta, Usage
from inference.errors import EngineError
from plugins.base import PluginBlocked
from plugins.chain import StreamFilter
from routing.gateway import GatewayError, GatewayMeta

from .wire import SSE_DONE, ChunkWriter, usage_dict


class ChatStream:
    """The events of one streamed answer; ``final_usage`` and ``status`` are known once
    ``events`` has ended (however it ended)."""

    def __init__(self, writer: ChunkWriter, meta: GatewayMeta,
                 screen_for: Callable[[], StreamFilter], include_usage: bool,
                 prompt_estimate: int):
        self.writer, self.meta = writer, meta
        self.prompt_estimate = prompt_estimate
        self.screen_for = screen_for
        self.screens: dict[int, StreamFilter] = {}
        self.finishes: dict[int, str] = {}
        self.include_usage = include_usage
        self.usage: Usage | None = None
        self.counted = 0  # text pieces sent: the usage when the backend gives none
        self.status = 200

    @property
    def final_usage(self) -> Usage:
        """The backend's count, else the prompt's estimate and the pieces sent."""
        return self.usage or Usage(self.prompt_estimate, self.counted)

    def screen(self, index: int) -> StreamFilter:
        if index not in self.screens:
            self.screens[index] = self.screen_for()
        return self.screens[index]

    async def events(self, first: Delta | None,
                     deltas: AsyncIterator[Delta]) -> AsyncIterator[bytes]:
        yield self.writer.chunk({"role": "assistant", "content": ""})
        self.screen(0)
        try:
            delta = first
            while delta is not None:
                for event in self._relay(delta):
                    yield event
                delta = await anext(deltas, None)
            for index, screen in self.screens.items():
                if rest := screen.flush():
                    yield self.writer.chunk({"content": rest}, index=index)
        except (EngineError, GatewayError) as exc:
            self.status = exc.http_status if isinstance(exc, EngineError) else exc.status
            yield self.writer.error(self.status, exc.message, exc.code)
            return
        except PluginBlocked as exc:
            self.status = 400
            yield self.writer.error(400, exc.message, "content_blocked")
            return
        except BaseException:
            self.status = 499  # the client went away (nginx's code): the stream was cancelled
            raise
        for event in self._ending():
            yield event

    def _relay(self, delta: Delta) -> list[bytes]:
        events = []
        if delta.fields:
            self.writer.base.update(delta.fields)
        index = delta.index
        if index not in self.screens:  # a further choice begins
            self.screen(index)
            events.append(self.writer.chunk({"role": "assistant", "content": ""}, index=index))
        piece: dict[str, Any] = {}
        if delta.text:
            self.counted += delta.tokens or 1
            if text := self.screens[index].feed(delta.text):
                piece["content"] = text
        if delta.tool_calls:
            piece["tool_calls"] = delta.tool_calls
        if delta.refusal:
            piece["refusal"] = delta.refusal
        piece.update(delta.message_fields or {})
        if piece or delta.logprobs:
            events.append(self.writer.chunk(piece, index=index, logprobs=delta.logprobs))
        if delta.finish_reason:
            self.finishes[index] = delta.finish_reason
        self.usage = delta.usage or self.usage
        return events

    def _ending(self) -> list[bytes]:
        indexes = sorted(self.screens)
        events = [self.writer.chunk({}, self.finishes.get(index) or "stop", index=index)
                  for index in indexes[:-1]]
        last = indexes[-1]
        events.append(self.writer.chunk({}, self.finishes.get(last) or "stop", index=last,
                                        x_openclaw=self._extension()))
        if self.include_usage:
            events.append(self.writer.usage(usage_dict(self.final_usage)))
        events.append(SSE_DONE)
        return events

    def _extension(self) -> dict[str, Any]:
        meta, screen = self.meta, self.screens[0]
        return {"model": meta.model, "route": meta.route, "models_tried": meta.models_tried,
                "models": meta.models or [meta.model],
                "overhead_ms": round(meta.overhead_ms(), 1),
                "plugin_actions": [*screen.request.metadata.get("plugin_actions", []),
                                   *screen.metadata.get("plugin_actions", [])]}
