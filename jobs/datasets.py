"""Dataset export: selected conversations → chat-format JSONL, one conversation a line
(``{"messages": [{"role", "content"}, ...]}``), saved as a versioned ``Dataset``.

- An annotated reply's correction replaces it (the latest annotation with one wins).
- A reply rated down and not corrected ends its conversation's line there: what
  follows it was said in answer to a bad reply. A line left with no reply is dropped.
- Conversations holding personal data (``plugins.builtins.pii.find_pii``) or
  something that looks like a secret (API keys, private keys, tokens, passwords)
  are left out unless ``include_flagged``; the dataset counts them.
- Lines are in conversation order (created, id), so the same selection gives the
  same bytes and the same SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max, Prefetch, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.translation import gettext as _

from chat.conversations import text_of
from chat.models import Conversation, Message, Role
from plugins.builtins.pii import find_pii

from .models import Annotation, Dataset, Rating

FILTER_KEYS = ("conversation_ids", "user", "model", "rating", "tag", "annotated_only",
               "since", "until")
TRAINED_ROLES = (Role.SYSTEM, Role.USER, Role.ASSISTANT)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

# What a leaked credential looks like; PII kinds come from the PII plugin.
SECRET_PATTERNS = [
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),                        # OpenAI-style and ours
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),                   # AWS access key id
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),                   # GitHub tokens
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),                   # Slack tokens
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),  # JWT
    re.compile(r"(?i)\b(?:password|passwd|secret|api[_-]?key|token)\s*[:=]\s*\S{6,}"),
]


class DatasetRefused(Exception):
    """Bad filters or an empty selection, with a message for the user."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field


def flag_reasons(text: str) -> list[str]:
    """Why ``text`` must not go into a dataset unasked: PII kinds and ``secret``."""
    reasons = sorted({span.kind for span in find_pii(text)})
    if any(pattern.search(text) for pattern in SECRET_PATTERNS):
        reasons.append("secret")
    return reasons


def clean_filters(filters: dict[str, Any] | None) -> dict[str, Any]:
    """Check the filters; unknown keys and bad values are refused, naming the key."""
    filters = dict(filters or {})
    unknown = sorted(set(filters) - set(FILTER_KEYS))
    if unknown:
        raise DatasetRefused(_("Unknown filter “%(key)s” (allowed: %(allowed)s).")
                             % {"key": unknown[0], "allowed": ", ".join(FILTER_KEYS)},
                             field=unknown[0])
    ids = filters.get("conversation_ids")
    if ids is not None and (not isinstance(ids, list)
                            or not all(isinstance(i, str) for i in ids)):
        raise DatasetRefused(_("“conversation_ids” must be a list of ids."),
                             field="conversation_ids")
    if filters.get("rating") not in (None, *Rating.values):
        raise DatasetRefused(_("“rating” must be one of: %(allowed)s.")
                             % {"allowed": ", ".join(Rating.values)}, field="rating")
    for key in ("since", "until"):
        if filters.get(key) is not None:
            _parse_when(filters[key], key)
    return filters


def _parse_when(value: Any, key: str) -> datetime:
    parsed = None
    if isinstance(value, str):
        parsed = parse_datetime(value)
        if parsed is None and (day := parse_date(value)) is not None:
            parsed = datetime(day.year, day.month, day.day)
    if parsed is None:
        raise DatasetRefused(_("“%(key)s” must be an ISO date or date-time.") % {"key": key},
                             field=key)
    if parsed.tzinfo is None:
        parsed = timezone.make_aware(parsed)
    return parsed


def select_conversations(filters: dict[str, Any]) -> QuerySet[Conversation]:
    """The conversations the (cleaned) filters select, oldest first."""
    queryset = Conversation.objects.all()
    if filters.get("conversation_ids") is not None:
        queryset = queryset.filter(pk__in=_uuids(filters["conversation_ids"]))
    if filters.get("user"):
        queryset = queryset.filter(user=filters["user"])
    if filters.get("model"):
        queryset = queryset.filter(messages__role=Role.ASSISTANT,
                                   messages__model=filters["model"])
    annotations = Annotation.objects.all()
    if filters.get("rating"):
        annotations = annotations.filter(rating=filters["rating"])
    if filters.get("tag"):
        annotations = annotations.filter(tags__contains=[filters["tag"]])
    if filters.get("rating") or filters.get("tag") or filters.get("annotated_only"):
        queryset = queryset.filter(
            pk__in=annotations.values("message__conversation_id"))
    if filters.get("since"):
        queryset = queryset.filter(created_at__gte=_parse_when(filters["since"], "since"))
    if filters.get("until"):
        queryset = queryset.filter(created_at__lt=_parse_when(filters["until"], "until"))
    return queryset.distinct().order_by("created_at", "pk")


def _uuids(values: Iterable[str]) -> list[str]:
    try:
        return [str(uuid.UUID(value)) for value in values]
    except ValueError:
        raise DatasetRefused(_("“conversation_ids” holds an id that is not a UUID."),
                             field="conversation_ids") from None


def conversation_line(messages: Iterable[Message]) -> list[dict[str, str]]:
    """One conversation's training messages: in-context system/user/assistant text,
    corrections applied, cut before a reply rated down and not corrected."""
    line: list[dict[str, str]] = []
    for message in messages:
        if message.role not in TRAINED_ROLES or not message.in_context:
            continue
        content = text_of(message.value)
        if message.role == Role.ASSISTANT:
            correction, rated_down = _judgement(message)
            if correction:
                content = correction
            elif rated_down:
                break
        if content.strip():
            line.append({"role": message.role, "content": content})
    while line and line[-1]["role"] != Role.ASSISTANT:
        line.pop()  # a line ends with a reply: that is what is learnt
    return line


def _judgement(message: Message) -> tuple[str, bool]:
    """The latest correction of a reply, and whether its latest rating is down."""
    annotations = sorted(message.annotations.all(), key=lambda a: a.updated_at, reverse=True)
    correction = next((a.corrected_content for a in annotations if a.corrected_content), "")
    rated = next((a.rating for a in annotations if a.rating != Rating.NONE), Rating.NONE)
    return correction, rated == Rating.DOWN


def build_lines(conversations: Iterable[Conversation],
                include_flagged: bool) -> tuple[list[dict], int]:
    """The JSONL rows and how many conversations were left out as flagged."""
    rows, excluded = [], 0
    for conversation in conversations:
        line = conversation_line(conversation.messages.all())
        if not line:
            continue
        if not include_flagged and any(flag_reasons(m["content"]) for m in line):
            excluded += 1
            continue
        rows.append({"messages": line})
    return rows, excluded


def export_dataset(name: str, filters: dict[str, Any] | None = None, *,
                   include_flagged: bool = False, user=None) -> Dataset:
    """Export the selected conversations as the next version of dataset ``name``."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise DatasetRefused(_("A dataset name is 1–100 letters, digits, “.”, “_” or “-”."),
                             field="name")
    filters = clean_filters(filters)
    conversations = select_conversations(filters).prefetch_related(Prefetch(
        "messages", queryset=Message.objects.order_by("turn", "id")
        .prefetch_related("annotations")))
    rows, excluded = build_lines(conversations, include_flagged)
    if not rows:
        raise DatasetRefused(_("The filters select no conversation with a reply to learn "
                               "from (%(excluded)d left out as flagged).")
                             % {"excluded": excluded})
    content = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    return _save(name, filters, include_flagged, rows, excluded, content, user)


def _save(name, filters, include_flagged, rows, excluded, content, user) -> Dataset:
    for _attempt in range(3):  # two exports of one name at once: the loser retries
        try:
            with transaction.atomic():
                latest = Dataset.objects.filter(name=name).aggregate(v=Max("version"))["v"]
                return Dataset.objects.create(
                    name=name, version=(latest or 0) + 1, filters=filters,
                    include_flagged=include_flagged, line_count=len(rows),
                    excluded_count=excluded, content=content,
                    sha256=hashlib.sha256(content).hexdigest(), created_by=user)
        except IntegrityError:
            continue
    raise DatasetRefused(_("Could not save dataset “%(name)s”: it is being exported "
                           "elsewhere; try again.") % {"name": name})


def dataset_rows(dataset: Dataset) -> list[dict[str, Any]]:
    """The dataset's lines, parsed."""
    return [json.loads(line) for line in bytes(dataset.content).decode().splitlines()
            if line.strip()]
