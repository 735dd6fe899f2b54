"""Long-term memory with the real all-MiniLM-L6-v2 on pgvector: what is kept, recall
scoped to one user above the threshold, and the 11th turn of a conversation recalling
turn 1 (out of the window) after a real Celery worker remembered it."""

from __future__ import annotations

import time
import uuid

import pytest
from asgiref.sync import sync_to_async

from chat import memory
from chat.graph.service import arun_turn, astream_turn
from chat.models import Conversation, MemoryItem, Message
from routing.models import ModelEndpoint

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("closed_saver")]

FACT = "My sister Alice lives in Lisbon and works as a marine biologist studying dolphins."
QUESTION = "What does my sister do for a living?"
FILLER = ["The weather was grey this morning.", "I had porridge for breakfast today.",
          "The train to work was ten minutes late.", "Our team meeting ran long again.",
          "I am reading a novel about a lighthouse.", "The printer on floor two jammed.",
          "We ordered new chairs for the office.", "My laptop needs a software update.",
          "Lunch was a cheese sandwich and an apple."]


def conversation_with(user: str, *texts: str) -> list[Message]:
    conversation = Conversation.objects.create(user=user)
    return [Message.objects.create(conversation=conversation, turn=i + 1, role="user",
                                   content=text) for i, text in enumerate(texts)]


def test_only_substantial_user_messages_are_kept_and_duplicates_skipped():
    messages = conversation_with("ann", FACT, "ok thanks", FACT)
    reply = Message.objects.create(conversation=messages[0].conversation, turn=1,
                                   role="assistant", content="That sounds like a fine job.")

    kept = memory.remember_messages([m.pk for m in messages] + [reply.pk])

    assert [item.text for item in kept] == [FACT]
    assert kept[0].source_id == messages[0].pk
    topic = Conversation.objects.get(pk=messages[0].conversation_id).topic_vector
    assert topic is not None and abs(sum(x * x for x in topic) - 1) < 1e-3


def test_recall_is_scoped_to_the_user_and_above_the_threshold():
    memory.remember_messages([m.pk for m in conversation_with("ann", FACT, *FILLER[:3])])
    memory.remember_messages([m.pk for m in conversation_with("bob", FACT)])
    vector = memory.embed([QUESTION])[0]

    hits = memory.search("ann", vector)
    unrelated = memory.search("ann", memory.embed(["How do I bake sourdough bread?"])[0])

    assert [hit.text for hit in hits] == [FACT]
    assert hits[0].score >= 0.35
    assert {MemoryItem.objects.get(pk=hit.id).user for hit in hits} == {"ann"}
    assert unrelated == []


def wait_for_memory(source_text: str, user: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(item.text == source_text for item in MemoryItem.objects.filter(user=user)):
            return
        time.sleep(0.2)
    pytest.fail(f"the worker did not remember {source_text!r} within {timeout} s")


async def test_eleventh_turn_recalls_turn_one_from_long_term_memory(openai_server,
                                                                   start_worker, settings):
    # given a worker that remembers, and a model whose requests the server records
    settings.OPENCLAW_MEMORY_WINDOW = 10
    settings.OPENCLAW_MEMORY_QUEUE = f"memory-{uuid.uuid4().hex[:8]}"  # this worker's alone
    await sync_to_async(start_worker)(queues=settings.OPENCLAW_MEMORY_QUEUE)
    await ModelEndpoint.objects.acreate(name="recorded", engine="openai",
                                        upstream_model="echo", endpoint_url=openai_server.url)
    first = await arun_turn(conversation_id=None, user="carol", content=FACT,
                            model="recorded")
    conversation = first["conversation_id"]
    await sync_to_async(wait_for_memory)(FACT, "carol")
    for text in FILLER:
        done = await arun_turn(conversation_id=conversation, user="carol", content=text,
                               model="recorded")
        assert done["type"] == "done"

    # when
    events = [e async for e in astream_turn(conversation_id=conversation, user="carol",
                                            content=QUESTION, model="recorded")]

    # then turn 1 is out of the window, and back through memory
    assert events[-1]["type"] == "done"
    sent = openai_server.requests[-1].body["messages"]
    users = [m["content"] for m in sent if m["role"] == "user"]
    assert FACT not in users and users[0] == FILLER[0] and users[-1] == QUESTION
    assert len(users) == 10
    assert sent[0]["role"] == "system" and FACT in sent[0]["content"]
    hits = next(e for e in events if e["type"] == "memory")["hits"]
    assert hits[0]["text"] == FACT and hits[0]["conversation_id"] == conversation
