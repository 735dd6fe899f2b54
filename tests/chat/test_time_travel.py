"""Time travel on the real PostgreSQL checkpointer: a conversation's checkpoints listed,
a branch forked from a message or a checkpoint (the parent untouched and readable,
the branch continuing from the fork's turn, with the model seeing only that branch),
and an answer regenerated from a user message."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chat.conversations import ConversationError
from chat.graph.service import arun_turn, get_graph, thread_config
from chat.models import Conversation, Message
from chat.workflows.history import afork, alist_checkpoints, astream_regenerate
from routing.models import ModelEndpoint

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("no_recall", "closed_saver")]


@pytest.fixture
def recorded(db, openai_server):
    ModelEndpoint.objects.create(name="recorded", engine="openai", upstream_model="echo",
                                 endpoint_url=openai_server.url)
    return openai_server


async def four_turns(user: str) -> str:
    conversation = None
    for number in range(1, 5):
        done = await arun_turn(conversation_id=conversation, user=user,
                               content=f"turn {number} words", model="recorded")
        assert done["type"] == "done"
        conversation = done["conversation_id"]
    return conversation


def texts(conversation_id: str) -> list[tuple[int, str, str]]:
    return list(Message.objects.filter(conversation_id=conversation_id)
                .order_by("turn", "id").values_list("turn", "role", "content"))


def sent_user_texts(server) -> list[str]:
    return [m["content"] for m in server.requests[-1].body["messages"] if m["role"] == "user"]


async def test_checkpoints_are_listed_newest_first_with_their_turns(recorded, settings):
    settings.OPENCLAW_GRAPH_DURABILITY = "async"  # a checkpoint after every node
    conversation = await four_turns("ada")

    listed = await alist_checkpoints(conversation_id=conversation, user="ada")

    assert listed[0]["completed_turn"] == 4 and listed[0]["next"] == []
    assert listed[-1]["turn"] is None and listed[-1]["source"] == "input"
    assert {c["completed_turn"] for c in listed} == {0, 1, 2, 3, 4}
    steps = [c["step"] for c in listed]
    assert steps == sorted(steps, reverse=True)
    with pytest.raises(ConversationError):
        await alist_checkpoints(conversation_id=conversation, user="mallory")


async def test_durability_exit_writes_one_checkpoint_per_turn(recorded, settings):
    settings.OPENCLAW_GRAPH_DURABILITY = "exit"  # the default
    conversation = await four_turns("ada")

    listed = await alist_checkpoints(conversation_id=conversation, user="ada")

    assert [c["completed_turn"] for c in listed] == [4, 3, 2, 1]
    assert all(c["next"] == [] for c in listed)


async def test_fork_from_the_second_message_keeps_both_branches(recorded):
    # given a 4-turn conversation
    conversation = await four_turns("ben")
    second = await Message.objects.filter(conversation_id=conversation,
                                          role="user").order_by("turn")[1:2].aget()
    before = await sync_to_async(texts)(conversation)

    # when a branch is forked from its 2nd user message and goes on
    branch = await afork(conversation_id=conversation, user="ben", message_id=second.pk)
    after = await arun_turn(conversation_id=branch.conversation_id, user="ben",
                            content="a different third", model="recorded")

    # then the branch continued from turn 2: the model saw turns 1-2 and the new one
    assert branch.turn == 2 and branch.parent_id == conversation and branch.checkpoint_id
    assert after["type"] == "done"
    assert sent_user_texts(recorded) == ["turn 1 words", "turn 2 words", "a different third"]
    assert await sync_to_async(texts)(branch.conversation_id) == [
        (1, "user", "turn 1 words"), (1, "assistant", "echo: turn 1 words"),
        (2, "user", "turn 2 words"), (2, "assistant", "echo: turn 2 words"),
        (3, "user", "a different third"), (3, "assistant", "echo: a different third")]
    # the branch's thread went on from the forked checkpoint
    state = await (await get_graph()).aget_state(thread_config(branch.conversation_id))
    assert state.values["turns"] == 3
    # and the old branch is unchanged and readable, its thread included
    assert await sync_to_async(texts)(conversation) == before
    old = await (await get_graph()).aget_state(thread_config(conversation))
    assert old.values["turns"] == 4 and old.values["message"]["content"] == "turn 4 words"
    forked = await Conversation.objects.aget(pk=branch.conversation_id)
    assert str(forked.parent_id) == conversation and forked.forked_at_turn == 2
    # the old branch goes on by itself too
    more = await arun_turn(conversation_id=conversation, user="ben", content="turn 5 words",
                           model="recorded")
    assert more["type"] == "done"
    assert sent_user_texts(recorded)[-2:] == ["turn 4 words", "turn 5 words"]


async def test_fork_from_a_checkpoint_inside_a_turn_starts_that_turn_again(recorded, settings):
    settings.OPENCLAW_GRAPH_DURABILITY = "async"  # checkpoints inside turns
    conversation = await four_turns("cal")
    listed = await alist_checkpoints(conversation_id=conversation, user="cal")
    inside_third = next(c for c in listed if c["turn"] == 3 and c["completed_turn"] == 2)

    branch = await afork(conversation_id=conversation, user="cal",
                         checkpoint_id=inside_third["checkpoint_id"])

    assert branch.turn == 2
    assert [t for t, role, _text in await sync_to_async(texts)(branch.conversation_id)
            if role == "user"] == [1, 2]
    with pytest.raises(ConversationError):
        await afork(conversation_id=conversation, user="cal", checkpoint_id="nope")


async def test_regenerate_answers_a_user_message_again_in_a_branch(recorded):
    conversation = await four_turns("dot")
    third = await Message.objects.aget(conversation_id=conversation, turn=3, role="user")

    events = [e async for e in astream_regenerate(conversation_id=conversation, user="dot",
                                                  message_id=third.pk)]

    fork = events[0]
    assert fork["type"] == "fork" and fork["parent"] == conversation and fork["turn"] == 2
    assert events[-1]["type"] == "done"
    assert events[-1]["content"] == "echo: turn 3 words"
    assert sent_user_texts(recorded) == ["turn 1 words", "turn 2 words", "turn 3 words"]
    roles = [(t, r) for t, r, _text in await sync_to_async(texts)(fork["id"])]
    assert roles == [(1, "user"), (1, "assistant"), (2, "user"), (2, "assistant"),
                     (3, "user"), (3, "assistant")]
    assert await Message.objects.filter(conversation_id=conversation).acount() == 8
    # an assistant message cannot be regenerated "from"
    reply = await Message.objects.aget(conversation_id=conversation, turn=1,
                                       role="assistant")
    refused = [e async for e in astream_regenerate(conversation_id=conversation, user="dot",
                                                   message_id=reply.pk)]
    assert refused[-1]["code"] == "message_not_found"
