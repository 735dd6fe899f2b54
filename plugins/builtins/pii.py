"""PII redaction with a hybrid mode: personal data (e-mail addresses, phone numbers,
payment card numbers, national ID numbers, IBANs, IP addresses) is replaced by a
placeholder, and/or — hybrid mode — the request is flagged ``sensitive_data`` so that
routing sends it only to local models (a routing rule on the ``flag`` field, and the
gateway's local-only filter)."""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ..base import PluginBase, PluginRequest, PluginResponse, map_message_text, message_texts

SENSITIVE_DATA_FLAG = "sensitive_data"
# Streaming holds back this many characters (longer tokens may pass unredacted).
STREAM_HOLD = 64


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


def _luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _card(match: re.Match) -> bool:
    digits = re.sub(r"\D", "", match.group(0))
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _cn_resident_id(value: str) -> bool:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(c) * w for c, w in zip(value[:17], weights, strict=True))
    return "10X98765432"[total % 11] == value[17].upper()


def _national_id(match: re.Match) -> bool:
    value = match.group(0)
    if "-" in value:  # US social security number: no 000/666/9xx area, 00 group, 0000 serial
        area, group, serial = value.split("-")
        return area not in ("000", "666") and area[0] != "9" and group != "00" \
            and serial != "0000"
    if len(value) == 18 and value[0].isdigit():  # PRC resident identity card, checksummed
        return _cn_resident_id(value)
    return True  # UK national insurance number: the pattern is the check


def _iban(match: re.Match) -> bool:
    value = re.sub(r"\s", "", match.group(0)).upper()
    rearranged = value[4:] + value[:4]
    return 15 <= len(value) <= 34 and int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


# Shapes a phone number's pattern also fits: dates, IPv4 addresses, US SSNs.
_NOT_PHONE = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|^\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}"
                        r"|^\d{1,3}(?:\.\d{1,3}){3}$|^\d{3}-\d{2}-\d{4}$")


def _phone(match: re.Match) -> bool:
    value = match.group(0)
    digits = re.sub(r"\D", "", value)
    if not 7 <= len(digits) <= 15 or _NOT_PHONE.match(value):
        return False
    # Bare digit runs are too often amounts, ids or dates: ask for a phone's shape.
    return value.startswith(("+", "(")) or len(digits) >= 10 or bool(re.search(r"[ .-]", value))


def _always(match: re.Match) -> bool:
    return True


# kind -> (pattern, check); the order is the priority when matches overlap.
DETECTORS: dict[str, tuple[re.Pattern, Callable[[re.Match], bool]]] = {
    "email": (re.compile(r"(?<![\w.%+-])[\w.%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])"),
              _always),
    "iban": (re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])"),
             _iban),
    "card": (re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card),
    "national_id": (re.compile(r"(?<![\w-])(?:\d{3}-\d{2}-\d{4}|\d{17}[\dXx]|"
                               r"[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D])"
                               r"(?![\w-])"), _national_id),
    "ip_address": (re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}"
                              r"(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])"), _always),
    "phone": (re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}"
                         r"(?:[ .-]?\d{2,5}){1,4}(?!\w)"), _phone),
}
KINDS = list(DETECTORS)


MEMO_CHARS = 4096  # texts up to this long have their findings remembered
MEMO_SIZE = 4096  # that many (a conversation's window is scanned again every turn)


def find_pii(text: str, kinds: Iterable[str] = KINDS) -> list[Span]:
    """The personal data in ``text``, non-overlapping, in text order (where matches
    overlap, the kind listed first in ``DETECTORS`` wins)."""
    wanted = tuple(kind for kind in DETECTORS if kind in set(kinds))
    if len(text) <= MEMO_CHARS:
        return list(_remembered(text, wanted))
    return _find(text, wanted)


@functools.lru_cache(maxsize=MEMO_SIZE)
def _remembered(text: str, kinds: tuple[str, ...]) -> tuple[Span, ...]:
    return tuple(_find(text, kinds))


def _find(text: str, kinds: tuple[str, ...]) -> list[Span]:
    taken: list[Span] = []
    for kind in kinds:
        pattern, check = DETECTORS[kind]
        for match in pattern.finditer(text):
            span = Span(match.start(), match.end(), kind)
            if check(match) and not any(s.start < span.end and span.start < s.end
                                        for s in taken):
                taken.append(span)
    return sorted(taken, key=lambda s: s.start)


class PiiRedaction(PluginBase):
    name = "pii_redaction"
    version = "1.0"
    description = _("Finds personal data (e-mail, phone, card, national ID, IBAN, IP "
                    "address) and redacts it, and/or — hybrid mode — flags the request "
                    "“sensitive_data” so that it is routed only to local models.")
    config_schema = {
        "type": "object",
        "properties": {
            "kinds": {"type": "array", "uniqueItems": True, "minItems": 1,
                      "items": {"enum": KINDS}},
            "redact": {"type": "boolean"},
            "hybrid_mode": {"type": "boolean"},
            "redact_output": {"type": "boolean"},
            "placeholder": {"type": "string", "minLength": 1, "maxLength": 100},
        },
        "additionalProperties": False,
    }
    defaults = {"kinds": ["email", "phone", "card", "national_id", "iban"], "redact": True,
                "hybrid_mode": False, "redact_output": False, "placeholder": "[{kind}]"}

    @classmethod
    def check_config(cls, config: dict) -> list[tuple[str, str]]:
        if not (config["redact"] or config["hybrid_mode"] or config["redact_output"]):
            return [("redact", gettext("With redaction, hybrid mode and output redaction all "
                                       "off, this plugin does nothing."))]
        return []

    # --- hooks ---------------------------------------------------------------------------

    def pre_process(self, request: PluginRequest) -> PluginRequest:
        counts: Counter[str] = Counter()
        for message in request.messages:
            if message.get("role") == "system":  # the operator's own text
                continue
            if self.config["redact"]:
                map_message_text(message, lambda text: self._redact(text, counts))
            else:
                for text in message_texts(message):
                    counts.update(s.kind for s in find_pii(text, self.config["kinds"]))
        if not counts:
            return request
        detail = {"kinds": dict(sorted(counts.items()))}
        if self.config["hybrid_mode"]:
            request.flags.add(SENSITIVE_DATA_FLAG)
            self.record(request.metadata, "flag", {**detail, "flag": SENSITIVE_DATA_FLAG})
            self.audit("flag", request, detail)
        if self.config["redact"]:
            self.record(request.metadata, "redact", detail)
            self.audit("redact", request, detail)
        return request

    def post_process(self, response: PluginResponse) -> PluginResponse:
        if self.config["redact_output"]:
            counts: Counter[str] = Counter()
            response.content = self._redact(response.content, counts)
            if counts:
                detail = {"kinds": dict(sorted(counts.items())), "direction": "output"}
                self.record(response.metadata, "redact", detail)
                self.audit("redact", response.request, detail)
        return response

    def stream_delta(self, text: str, state: dict) -> str:
        if not self.config["redact_output"]:
            return text
        buffer = state.get("pending", "") + text
        spans = find_pii(buffer, self.config["kinds"])
        cut = max(0, len(buffer) - STREAM_HOLD)
        if cut:  # cut at a space, never inside a word: its rest would lose its context
            space = max(buffer.rfind(" ", 0, cut + 1), buffer.rfind("\n", 0, cut + 1))
            cut = space + 1 if space >= 0 else cut
        for span in spans:
            if span.start < cut < span.end:
                cut = span.start
        state["pending"] = buffer[cut:]
        counts = state.setdefault("counts", Counter())
        return self._replace(buffer[:cut], [s for s in spans if s.end <= cut], counts)

    def stream_flush(self, state: dict) -> str:
        if not self.config["redact_output"]:
            return ""
        counts = state.setdefault("counts", Counter())
        text = self._redact(state.pop("pending", ""), counts)
        if counts:
            detail = {"kinds": dict(sorted(counts.items())), "direction": "output"}
            self.record(state.setdefault("metadata", {}), "redact", detail)
            self.audit("redact", state.get("request"), detail)
        return text

    # --- redaction -----------------------------------------------------------------------

    def _redact(self, text: str, counts: Counter[str]) -> str:
        return self._replace(text, find_pii(text, self.config["kinds"]), counts)

    def _replace(self, text: str, spans: list[Span], counts: Counter[str]) -> str:
        out, last = [], 0
        for span in spans:
            out += [text[last:span.start], self.config["placeholder"].replace(
                "{kind}", span.kind.upper())]
            last = span.end
            counts[span.kind] += 1
        out.append(text[last:])
        return "".join(out)
