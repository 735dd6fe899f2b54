"""Conversations to annotate and export, shared by the training-data tests."""

from __future__ import annotations

from chat.models import Conversation, Message


def conversation(user, *turns: tuple[str, str], model: str = "tiny") -> list[Message]:
    """A conversation of ``user`` (a Django user) with (question, reply) turns; returns
    its assistant messages."""
    chat = Conversation.objects.create(owner=user, user=user.get_username(), model=model)
    replies = []
    for turn, (question, reply) in enumerate(turns, start=1):
        Message.objects.create(conversation=chat, turn=turn, role="user", content=question)
        replies.append(Message.objects.create(conversation=chat, turn=turn, role="assistant",
                                              content=reply, model=model))
    return replies
