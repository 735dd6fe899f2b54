"""Curated answers (annotation reply): question/answer pairs (``QAPair``, edited in the
admin) whose question embeds close enough to a user's question answer it directly.
``match_reply`` / ``amatch_reply`` find the match for a workflow's ``annotation_reply``
node to use and the studio to show.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.utils.translation import gettext as _
from pgvector.django import CosineDistance

from .memory import embed
from .models import QAPair


class PairRefused(ValueError):
    """A pair that cannot be saved (no question or no answer)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class QAMatch:
    """A curated pair that answers a question directly, and how close it was."""

    pair_id: int
    question: str
    answer: str
    similarity: float
    threshold: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def save_pair(pair: QAPair) -> QAPair:
    """Save a pair with the embedding of its question (the offline MiniLM, 384-d)."""
    question = pair.question.strip()
    if not question or not pair.answer.strip():
        raise PairRefused(_("A pair needs a question and an answer."))
    pair.question = question
    pair.embedding = embed([question])[0]
    pair.save()
    return pair


def match_reply(text: str) -> QAMatch | None:
    """The enabled pair whose question is most similar to ``text``, when at least as
    similar as that pair's threshold; None otherwise. Pairs are few (curated), so an
    exact scan is fine and needs no index."""
    if not text.strip() or not QAPair.objects.filter(enabled=True).exists():
        return None
    vector = embed([text.strip()])[0]
    best = (QAPair.objects.filter(enabled=True, embedding__isnull=False)
            .annotate(distance=CosineDistance("embedding", vector))
            .order_by("distance").first())
    if best is None:
        return None
    similarity = round(1 - best.distance, 4)
    if similarity < best.threshold:
        return None
    return QAMatch(best.pk, best.question, best.answer, similarity, best.threshold)


async def amatch_reply(text: str) -> QAMatch | None:
    """``match_reply`` off the event loop (the embedding is CPU work)."""
    return await sync_to_async(match_reply)(text)
