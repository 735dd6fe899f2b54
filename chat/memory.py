"""Long-term memory: embeddings with the offline all-MiniLM-L6-v2, what is worth
keeping, and recall by cosine similarity over pgvector (HNSW), scoped to one user.

The model runs where the text is: a worker embeds what a turn leaves behind
(``chat.tasks``), and the web process embeds the one query a turn recalls with
(~15 ms on a 2-core CPU, less than a hop to a worker and back would add). Each process
loads it once, sharing the ``embedding`` engine's copy (``inference.engines.embedding``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, transaction
from pgvector.django import CosineDistance

from inference.engines import embedding as embedding_engine

from .conversations import text_of
from .models import Conversation, MemoryItem, Message, Role

logger = logging.getLogger(__name__)

DUPLICATE_SIMILARITY = 0.97  # a memory this close to one already kept adds nothing
_load_lock = threading.Lock()


# --- embeddings --------------------------------------------------------------------------


def _path() -> str:
    return settings.OPENCLAW_MEMORY_EMBEDDING_PATH


def encoder() -> Any:
    """The process's sentence-transformers model (loaded once, thread-safe)."""
    path = _path()
    model = embedding_engine._models.get(path)
    if model is None:
        with _load_lock:
            model = embedding_engine._models.get(path)
            if model is None:
                model = embedding_engine._models[path] = embedding_engine._load(path)
    return model


def embed(texts: list[str]) -> list[list[float]]:
    """Normalised embeddings, one per text."""
    if not texts:
        return []
    vectors = encoder().encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                               show_progress_bar=False)  # no bar per call in the logs
    return vectors.tolist()


async def aembed(texts: list[str]) -> list[list[float]]:
    """``embed`` off the event loop."""
    return await asyncio.to_thread(embed, texts)


# --- recall ------------------------------------------------------------------------------


@dataclass
class Hit:
    """One recalled memory: its id, text, cosine similarity and origin."""

    id: int
    text: str
    score: float
    conversation_id: str | None
    source_message_id: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def search(user: str, vector: list[float], *, top_k: int | None = None,
           threshold: float | None = None, exclude_messages: Iterable[int] = (),
           ef_search: int | None = None) -> list[Hit]:
    """The user's memories most similar to ``vector``: at most ``top_k``, each at least
    ``threshold`` similar, leaving out those taken from ``exclude_messages`` (already
    in the window). The HNSW scan is iterative, so the user filter cannot starve it."""
    top_k = settings.OPENCLAW_MEMORY_TOP_K if top_k is None else top_k
    threshold = settings.OPENCLAW_MEMORY_THRESHOLD if threshold is None else threshold
    if top_k <= 0:
        return []
    rows = (MemoryItem.objects.filter(user=user)
            .exclude(source_id__in=list(exclude_messages))
            .annotate(distance=CosineDistance("embedding", vector))
            .order_by("distance")
            .values("id", "text", "distance", "conversation_id", "source_id"))
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL hnsw.ef_search = %s",
                           [int(ef_search or settings.OPENCLAW_MEMORY_EF_SEARCH)])
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        found = list(rows[:top_k])
    hits = [Hit(r["id"], r["text"], round(1 - r["distance"], 4),
                str(r["conversation_id"]) if r["conversation_id"] else None, r["source_id"])
            for r in found]
    return sorted((h for h in hits if h.score >= threshold), key=lambda h: -h.score)


async def arecall(user: str, query: str, exclude_messages: Iterable[int] = ()) -> list[Hit]:
    """Embed ``query`` and search the user's memories (nothing for an empty query)."""
    if not query.strip() or settings.OPENCLAW_MEMORY_TOP_K <= 0:
        return []
    vector = (await aembed([query]))[0]
    return await sync_to_async(search)(user, vector, exclude_messages=list(exclude_messages))


# --- remembering -------------------------------------------------------------------------


def worth_keeping(message: Message) -> bool:
    """A user's message with some substance (not "ok", "thanks"), not refused."""
    return (message.role == Role.USER and message.in_context
            and len(text_of(message.value).strip()) >= settings.OPENCLAW_MEMORY_MIN_CHARS)


def remember_messages(message_ids: list[int]) -> list[MemoryItem]:
    """Embed what is worth keeping of these messages into their owners' memories
    (near-duplicates of a memory already kept are skipped) and refresh the topic
    embedding of the conversations they belong to."""
    messages = [m for m in Message.objects.filter(pk__in=message_ids)
                .select_related("conversation").order_by("id") if worth_keeping(m)]
    texts = [text_of(m.value).strip() for m in messages]
    vectors = embed(texts)
    kept: list[MemoryItem] = []
    for message, text, vector in zip(messages, texts, vectors, strict=True):
        conversation = message.conversation
        if search(conversation.user, vector, top_k=1, threshold=DUPLICATE_SIMILARITY):
            continue
        kept.append(MemoryItem.objects.create(
            owner_id=conversation.owner_id, user=conversation.user, text=text,
            source=message, conversation=conversation, embedding=vector))
    for conversation_id in {m.conversation_id for m in messages}:
        refresh_topic(conversation_id)
    return kept


def refresh_topic(conversation_id) -> None:
    """The conversation's topic embedding: the normalised mean of its memories'."""
    vectors = list(MemoryItem.objects.filter(conversation_id=conversation_id)
                   .values_list("embedding", flat=True))
    if not vectors:
        return
    mean = np.mean(np.array(vectors, dtype=np.float32), axis=0)
    norm = float(np.linalg.norm(mean))
    topic = (mean / norm).tolist() if norm else mean.tolist()
    Conversation.objects.filter(pk=conversation_id).update(topic_vector=topic)
