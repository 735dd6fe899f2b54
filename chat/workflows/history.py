"""Time travel over a conversation's thread: list its checkpoints, fork a branch from
any checkpoint or message, regenerate the answer to any user message.

A branch is a new conversation (its own LangGraph thread) that starts with a copy of
the parent's messages through the turn it forks at and a copy of the checkpoint that
ended that turn, so the next turn continues exactly from there; the parent is left as
it was and stays readable. ``Conversation.parent`` / ``forked_at_turn`` /
``forked_from_checkpoint`` record where a branch came from.

* ``fork`` at a message keeps the whole turn that message belongs to; at a checkpoint,
  the turns complete at that checkpoint (a checkpoint inside a turn forks from the
  start of that turn).
* ``regenerate`` a user message forks before its turn and runs the message again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils.translation import gettext as _
from langgraph.checkpoint.base import CheckpointTuple

from ..conversations import ConversationError
from ..graph.checkpointer import get_saver
from ..graph.service import astream_turn, graph_for, thread_config
from ..models import Conversation, Message, Role
from .compiler import resolve


@dataclass
class Branch:
    """A fork: the new conversation, where it came from and how much it kept."""

    conversation_id: str
    parent_id: str
    turn: int
    checkpoint_id: str

    def as_event(self) -> dict[str, Any]:
        return {"type": "fork", "id": self.conversation_id, "parent": self.parent_id,
                "turn": self.turn, "checkpoint_id": self.checkpoint_id}


def _owned(conversation_id: str, user: str) -> Conversation:
    try:
        return Conversation.objects.get(pk=conversation_id, user=user)
    except (Conversation.DoesNotExist, ValueError, TypeError):
        raise ConversationError("conversation_not_found", _(
            "No conversation “%(id)s” for this user.") % {"id": conversation_id}) from None


def completed_turn(values: dict[str, Any]) -> int:
    """The last turn complete in a checkpoint's values (its answer stored)."""
    message = values.get("message") or {}
    turn = int(message.get("turn") or 0)
    return turn if (values.get("reply") or {}).get("message_id") else max(turn - 1, 0)


async def alist_checkpoints(*, conversation_id: str, user: str) -> list[dict[str, Any]]:
    """The conversation's checkpoints, newest first: ids, step, what runs next, and
    the turn each belongs to (no message content)."""
    await sync_to_async(_owned)(conversation_id, user)
    graph = await graph_for(await sync_to_async(resolve)(None, conversation_id))
    found = []
    async for snapshot in graph.aget_state_history(thread_config(conversation_id)):
        values = snapshot.values or {}
        message = values.get("message") or {}
        parent = (snapshot.parent_config or {}).get("configurable", {})
        found.append({
            "checkpoint_id": snapshot.config["configurable"]["checkpoint_id"],
            "parent_id": parent.get("checkpoint_id"), "created_at": snapshot.created_at,
            "step": (snapshot.metadata or {}).get("step"),
            "source": (snapshot.metadata or {}).get("source"), "next": list(snapshot.next),
            "turn": message.get("turn"), "message_id": message.get("id"),
            "reply_message_id": (values.get("reply") or {}).get("message_id"),
            "completed_turn": completed_turn(values)})
    return found


async def afork(*, conversation_id: str, user: str, message_id: int | None = None,
                checkpoint_id: str | None = None) -> Branch:
    """A new branch of ``user``'s conversation at a message or a checkpoint (one of
    them; neither: the latest checkpoint). ``ConversationError`` when either is not
    the conversation's."""
    source = await sync_to_async(_owned)(conversation_id, user)
    saver = await get_saver()
    if message_id is not None:
        turn = await sync_to_async(_turn_of)(source, message_id)
        found = await _boundary(saver, conversation_id, turn)
    else:
        found = await _checkpoint(saver, conversation_id, checkpoint_id)
        turn = completed_turn(found.checkpoint["channel_values"]) if found else 0
        if found is not None and not _at_boundary(found, turn):
            found = await _boundary(saver, conversation_id, turn)
    return await _branch(saver, source, turn, found)


async def _branch(saver, source: Conversation, turn: int,
                  found: CheckpointTuple | None) -> Branch:
    """Copy the messages through ``turn``, and the checkpoint ``found`` into the new
    thread (so its next turn continues from it)."""
    branch = await sync_to_async(copy_turns)(source, turn, found)
    if found is not None:
        config = {"configurable": {"thread_id": branch.conversation_id, "checkpoint_ns": ""}}
        await saver.aput(config, found.checkpoint,
                         {**found.metadata, "source": "fork",
                          "forked_from": f"{source.pk}:{branch.checkpoint_id}"},
                         found.checkpoint["channel_versions"])
    return branch


def _turn_of(conversation: Conversation, message_id: int) -> int:
    message = conversation.messages.filter(pk=message_id).first()
    if message is None:
        raise ConversationError("message_not_found", _(
            "No message %(id)s in this conversation.") % {"id": message_id})
    return message.turn


async def _checkpoint(saver, conversation_id: str,
                      checkpoint_id: str | None) -> CheckpointTuple | None:
    config = thread_config(conversation_id)
    if checkpoint_id:
        config["configurable"]["checkpoint_id"] = checkpoint_id
    found = await saver.aget_tuple(config)
    if found is None and checkpoint_id:
        raise ConversationError("checkpoint_not_found", _(
            "No checkpoint “%(id)s” in this conversation.") % {"id": checkpoint_id})
    return found


def _at_boundary(found: CheckpointTuple, turn: int) -> bool:
    """The checkpoint that ended turn ``turn`` (its answer stored, nothing to run)."""
    values = found.checkpoint["channel_values"]
    return (completed_turn(values) == turn
            and (values.get("message") or {}).get("turn") == turn)


async def _boundary(saver, conversation_id: str, turn: int) -> CheckpointTuple | None:
    """The newest checkpoint of the thread that ended turn ``turn``, if any."""
    async for found in saver.alist(thread_config(conversation_id)):
        if _at_boundary(found, turn):
            return found
    return None


def copy_turns(source: Conversation, turn: int, found: CheckpointTuple | None) -> Branch:
    """The branch's conversation with copies of the source's messages through ``turn``."""
    checkpoint_id = found.config["configurable"]["checkpoint_id"] if found else ""
    with transaction.atomic():
        branch = Conversation.objects.create(
            user=source.user, owner_id=source.owner_id, title=source.title,
            model=source.model, workflow_id=source.workflow_id, turns=turn,
            topic_vector=source.topic_vector, parent=source, forked_at_turn=turn,
            forked_from_checkpoint=checkpoint_id)
        Message.objects.bulk_create([
            Message(conversation=branch, turn=m.turn, role=m.role, content=m.content,
                    content_format=m.content_format, model=m.model,
                    prompt_tokens=m.prompt_tokens, completion_tokens=m.completion_tokens,
                    latency_ms=m.latency_ms, in_context=m.in_context, created_at=m.created_at)
            for m in source.messages.filter(turn__lte=turn).order_by("turn", "id")])
    return Branch(str(branch.pk), str(source.pk), turn, checkpoint_id)


async def astream_regenerate(*, conversation_id: str, user: str, message_id: int,
                             model: str | None = None, api_key: str = "",
                             params: dict | None = None) -> AsyncIterator[dict]:
    """A new answer to a user message: a branch forked before its turn, where the
    message is sent again. Events: ``fork`` (the branch), then the turn's."""
    try:
        source = await sync_to_async(_owned)(conversation_id, user)
        message = await sync_to_async(_user_message)(source, message_id)
        branch = await _fork_before(source, user, message.turn)
    except ConversationError as exc:
        yield {"type": "error", "code": exc.code, "message": exc.message,
               "status": 404 if exc.code.endswith("not_found") else 400}
        return
    yield branch.as_event()
    async for event in astream_turn(conversation_id=branch.conversation_id, user=user,
                                    content=message.value, model=model or source.model,
                                    api_key=api_key, params=params):
        yield event


def _user_message(conversation: Conversation, message_id: int) -> Message:
    message = conversation.messages.filter(pk=message_id, role=Role.USER).first()
    if message is None:
        raise ConversationError("message_not_found", _(
            "No user message %(id)s in this conversation.") % {"id": message_id})
    return message


async def _fork_before(source: Conversation, user: str, turn: int) -> Branch:
    saver = await get_saver()
    found = await _boundary(saver, str(source.pk), turn - 1) if turn > 1 else None
    return await _branch(saver, source, turn - 1, found)
