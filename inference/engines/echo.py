"""The ``echo`` engine: repeats the last user message, word by word.

A wiring check (routing, streaming, the studio) that needs no model; never
the default model of a registry a user chats with.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from ..registry import register_engine
from .base import ChatRequest, Delta, Engine, Usage

WORD_RE = re.compile(r"\S+\s*|\s+")


def _words(text: str) -> list[str]:
    return WORD_RE.findall(text)


def _content(message: dict) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # OpenAI content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


@register_engine("echo")
class EchoEngine(Engine):
    """Streams the last user message back (``n`` times for ``n`` choices);
    ``params.delay_ms`` paces the words."""

    honours = frozenset({"n"})

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        users = [m for m in request.messages if m.get("role") == "user"]
        words = _words(_content(users[-1]) if users else "")
        limit = request.max_tokens or self.config.max_output_tokens
        prompt_tokens = sum(len(_words(_content(m))) for m in request.messages)
        delay = float(self.config.params.get("delay_ms", 0)) / 1000
        choices = range(request.extra.get("n") or 1)
        for word in words[:limit]:
            if delay:
                await asyncio.sleep(delay)
            for index in choices:
                yield Delta(text=word, tokens=1, index=index)
        finish = "length" if len(words) > limit else "stop"
        for index in choices:  # the usage (every choice's tokens) rides on the last
            yield Delta(finish_reason=finish, index=index, usage=None if index < choices[-1]
                        else Usage(prompt_tokens, min(len(words), limit) * len(choices)))
