"""The sensitive-word filter: blocks or masks the words of an admin-edited list in
requests and answers, streamed answers included (a word split across deltas is held
back until it is complete, so it never leaves unmasked)."""

from __future__ import annotations

import re
from typing import Any

from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ..base import PluginBase, PluginBlocked, PluginRequest, PluginResponse, map_message_text


class SensitiveWordFilter(PluginBase):
    name = "sensitive_words"
    version = "1.0"
    description = _("Blocks or masks listed words in requests and answers (streamed ones "
                    "too). Matching ignores case and finds words inside longer text.")
    config_schema = {
        "type": "object",
        "properties": {
            "words": {"type": "array", "maxItems": 10000, "uniqueItems": True,
                      "items": {"type": "string", "minLength": 1, "maxLength": 200}},
            "mode": {"enum": ["block", "mask"]},
            "apply_to": {"enum": ["input", "output", "both"]},
            "mask_char": {"type": "string", "minLength": 1, "maxLength": 1},
            "block_message": {"type": "string", "maxLength": 500},
        },
        "required": ["words", "mode"],
        "additionalProperties": False,
    }
    defaults = {"words": [], "mode": "mask", "apply_to": "both", "mask_char": "*",
                "block_message": ""}

    def __init__(self, config: dict | None = None):
        super().__init__(config)
        words = sorted({w.strip() for w in self.config["words"] if w.strip()},
                       key=len, reverse=True)  # longest first: "abc" masks whole, not "ab"+"c"
        self.pattern = re.compile("|".join(map(re.escape, words)), re.IGNORECASE) \
            if words else None
        # Every proper prefix of a word: the tail of a stream that may still become one.
        self.prefixes = {w.lower()[:i] for w in words for i in range(1, len(w))}
        self.longest = max((len(w) for w in words), default=0)

    @classmethod
    def check_config(cls, config: dict) -> list[tuple[str, str]]:
        return [(f"words[{i}]", gettext("A word cannot be only spaces."))
                for i, word in enumerate(config["words"]) if not word.strip()]

    # --- hooks ---------------------------------------------------------------------------

    def pre_process(self, request: PluginRequest) -> PluginRequest:
        if not self._applies("input"):
            return request
        found: list[str] = []
        for message in request.messages:
            if message.get("role") != "system":  # the operator's own text
                map_message_text(message, lambda text: self._filter(text, found))
        self._report(found, "input", request, request.metadata)
        return request

    def post_process(self, response: PluginResponse) -> PluginResponse:
        if not self._applies("output"):
            return response
        found: list[str] = []
        response.content = self._filter(response.content, found)
        self._report(found, "output", response.request, response.metadata)
        return response

    def stream_delta(self, text: str, state: dict) -> str:
        if not self._applies("output"):
            return text
        buffer = state.get("pending", "") + text
        cut = self._hold_from(buffer)
        state["pending"] = buffer[cut:]
        return self._stream_out(buffer[:cut], state)

    def stream_flush(self, state: dict) -> str:
        return self._stream_out(state.pop("pending", ""), state) if self._applies("output") \
            else ""

    # --- matching ------------------------------------------------------------------------

    def _applies(self, direction: str) -> bool:
        return self.pattern is not None and self.config["apply_to"] in (direction, "both")

    def _filter(self, text: str, found: list[str]) -> str:
        """``text`` masked (mask mode) or unchanged; the words found go to ``found``."""
        def mask(match: re.Match) -> str:
            found.append(match.group(0).lower())
            return self.config["mask_char"] * len(match.group(0))

        assert self.pattern is not None  # only called once _applies() found a word list
        return self.pattern.sub(mask, text)

    def _hold_from(self, buffer: str) -> int:
        """Where the part of a streamed buffer that might still grow into a word starts:
        the earliest tail that is a proper prefix of a word, never inside a match."""
        assert self.pattern is not None  # only called once _applies() found a word list
        cut = len(buffer)
        for start in range(max(0, len(buffer) - self.longest + 1), len(buffer)):
            if buffer[start:].lower() in self.prefixes:
                cut = start
                break
        for match in self.pattern.finditer(buffer):
            if match.start() < cut < match.end():
                return match.start()
        return cut

    def _stream_out(self, text: str, state: dict) -> str:
        found: list[str] = []
        text = self._filter(text, found)
        if found and not state.get("reported"):
            state["reported"] = True  # one audit event per answer, not per delta
            self._report(found, "output", state.get("request"), state.setdefault("metadata", {}))
        return text

    def _report(self, found: list[str], direction: str, request: PluginRequest | None,
                metadata: dict[str, Any]) -> None:
        if not found:
            return
        detail = {"direction": direction, "matches": len(found), "words": sorted(set(found))}
        if self.config["mode"] == "block":
            self.audit("block", request, detail)
            self.record(metadata, "block", detail)
            raise PluginBlocked(self.name, self.config["block_message"] or self._blocked_text(
                direction))
        self.audit("mask", request, detail)
        self.record(metadata, "mask", detail)

    @staticmethod
    def _blocked_text(direction: str) -> str:
        if direction == "input":
            return gettext("Your message was not sent: it contains a word this service does "
                           "not allow. Rephrase it and try again.")
        return gettext("The answer was stopped: it contained a word this service does not "
                       "allow.")
