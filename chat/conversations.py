"""Services of conversations: start and finish a turn, the short-term window (cache
first, the database on a miss), and the seed's session JSON (export and import).

A message travels between these services and the graph as a plain dict:
``{"id", "turn", "role", "content", "timestamp"}`` (``content`` a string or a list of
OpenAI content parts). The window is cached AES-256-GCM encrypted, like the rows.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from celery import current_app
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from core import crypto, shared_state

from .graph.checkpointer import database
from .models import EMBEDDING_DIMENSIONS, Conversation, Message, Role, RunStatus, WorkflowRun

logger = logging.getLogger(__name__)

REMEMBER_TASK = "chat.remember_messages"  # chat.tasks.remember_messages

WINDOW_CACHE_TIMEOUT_S = 24 * 3600
TITLE_CHARS = 80


class ConversationError(Exception):
    """Bad input for a conversation service: a code, a message and an HTTP status for
    the caller (404 for ``*_not_found`` codes, else 400, unless given)."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.status = status or (404 if code.endswith("not_found") else 400)


@dataclass
class TurnStart:
    """A turn that has begun: its conversation and the user's message, stored."""

    conversation_id: str
    message: dict[str, Any]
    created: bool


# --- messages as dicts -----------------------------------------------------------------


def message_dict(message: Message) -> dict[str, Any]:
    return {"id": message.pk, "turn": message.turn, "role": message.role,
            "content": message.value, "timestamp": message.created_at.isoformat()}


def text_of(content: str | list[dict]) -> str:
    """The text of a content value: the string, or its ``text`` parts joined."""
    if isinstance(content, str):
        return content
    return "\n".join(str(part.get("text", "")) for part in content
                     if isinstance(part, dict) and part.get("type") == "text")


def check_content(content: Any, where: str = "content") -> str | list[dict]:
    """``content`` if it is a non-empty string or a non-empty list of content parts."""
    if isinstance(content, str) and content.strip():
        return content
    if isinstance(content, list) and content and all(
            isinstance(part, dict) and isinstance(part.get("type"), str) for part in content):
        return content
    raise ConversationError("invalid_content", _(
        "“%(where)s” must be a non-empty string or a list of content parts "
        "({\"type\": \"text\", \"text\": …}).") % {"where": where})


def owner_of(user: str):
    """The Django user the identity ``user`` names, if any."""
    return get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: user}).first()


# --- titles ----------------------------------------------------------------------------

TITLES_SEARCHED = 5000  # the latest conversations a title search decrypts


def matching_titles(conversations: QuerySet[Conversation], query: str,
                    limit: int = TITLES_SEARCHED) -> list[uuid.UUID]:
    """The ids of ``conversations`` (their latest ``limit``) whose title contains
    ``query``, case-insensitively. Titles are encrypted at rest, so the database cannot
    search them: they are decrypted here (a few microseconds each)."""
    needle = query.strip().casefold()
    if not needle:
        return []
    found = conversations.order_by("-updated_at").values_list("pk", "title")[:limit]
    return [pk for pk, title in found if needle in (title or "").casefold()]


# --- turns -----------------------------------------------------------------------------


def start_turn(conversation_id: str | None, user: str, content: Any, model: str, *,
               refuse_if_waiting: bool = False) -> TurnStart:
    """Store the user's message as the next turn of the conversation (created when
    ``conversation_id`` is None), so that nothing is lost whatever follows.
    ``refuse_if_waiting``: store nothing if a run of the conversation waits for a
    person's approval (``awaiting_approval``)."""
    content = check_content(content)
    if not user:
        raise ConversationError("invalid_user", _("A turn needs the user it belongs to."))
    stored, fmt = Message.stored(content)
    message = Message(role=Role.USER, content=stored, content_format=fmt)
    if conversation_id is None:
        title = " ".join(text_of(content).split())[:TITLE_CHARS]
        with transaction.atomic():
            message.conversation = Conversation.objects.create(
                user=user, owner=owner_of(user), title=title, model=model, turns=1)
            message.turn = 1
            message.save()
        return TurnStart(str(message.conversation_id), message_dict(message), True)
    try:
        pk = uuid.UUID(str(conversation_id))
    except ValueError:
        pk = None
    if pk is None or not _store_turn(pk, user, model, message, refuse_if_waiting):
        if pk is not None and refuse_if_waiting and Conversation.objects.filter(
                pk=pk, user=user).exists():
            raise ConversationError("awaiting_approval", _(
                "A run of this conversation waits for approval: approve, edit or reject "
                "it first."), 409)
        raise ConversationError("conversation_not_found", _(
            "No conversation “%(id)s” for this user.") % {"id": conversation_id})
    return TurnStart(str(pk), message_dict(message), False)


async def astart_turn(conversation_id: str | None, user: str, content: Any, model: str, *,
                      refuse_if_waiting: bool = False) -> TurnStart:
    """``start_turn`` for async code. A turn of an existing conversation — every turn
    but a conversation's first — is stored from the event loop on its own database
    pool, with no thread hop; the rest (a new conversation, a refusal's reason) goes
    through ``start_turn`` in a thread."""
    try:
        pk = uuid.UUID(str(conversation_id)) if conversation_id is not None else None
    except ValueError:
        pk = None
    if pk is None or not user:
        return await sync_to_async(start_turn)(conversation_id, user, content, model,
                                               refuse_if_waiting=refuse_if_waiting)
    stored, fmt = Message.stored(check_content(content))
    message = Message(role=Role.USER, content=stored, content_format=fmt)
    sql, params = _store_turn_sql(pk, user, model, message, refuse_if_waiting)
    async with (await database()).connection() as conn:
        cursor = await conn.execute(sql, params)
        row = await cursor.fetchone()
    if row is None:  # not the user's, or waiting: the ORM tells which
        return await sync_to_async(start_turn)(conversation_id, user, content, model,
                                               refuse_if_waiting=refuse_if_waiting)
    message.pk, message.turn, message.conversation_id = row["id"], row["turn"], pk
    return TurnStart(str(pk), message_dict(message), False)


def _store_turn(pk: uuid.UUID, user: str, model: str, message: Message,
                refuse_if_waiting: bool) -> bool:
    """Count the next turn on ``user``'s conversation and insert ``message`` as that
    turn, in one statement (the row is locked while it runs). False when the
    conversation is not the user's, or (``refuse_if_waiting``) a run of it waits for
    approval."""
    sql, params = _store_turn_sql(pk, user, model, message, refuse_if_waiting)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    message.pk, message.turn, message.conversation_id = row[0], row[1], pk
    return True


def _store_turn_sql(pk: uuid.UUID, user: str, model: str, message: Message,
                    refuse_if_waiting: bool) -> tuple[str, list[Any]]:
    """``UPDATE`` the conversation's turn count ``RETURNING`` it, and ``INSERT`` the
    message as that turn from it: one round trip, the path of every turn to its first
    token. Columns and values come from the models' own fields."""
    sql, fields = _store_turn_statement(refuse_if_waiting)
    values = [f.get_db_prep_save(f.pre_save(message, True), connection) for f in fields]
    params = [model, timezone.now(), pk, user,
              *([RunStatus.WAITING] if refuse_if_waiting else []), *values]
    return sql, params


@functools.cache
def _store_turn_statement(refuse_if_waiting: bool) -> tuple[str, list]:
    """The statement of ``_store_turn_sql`` and the message fields it inserts."""
    quote = connection.ops.quote_name
    fields = [f for f in Message._meta.concrete_fields
              if not f.primary_key and f.attname not in ("conversation_id", "turn")]
    waiting = (f"AND NOT EXISTS (SELECT 1 FROM {quote(WorkflowRun._meta.db_table)} AS r "
               "WHERE r.conversation_id = c.id AND r.status = %s)") if refuse_if_waiting else ""
    sql = (f"WITH c AS (UPDATE {quote(Conversation._meta.db_table)} AS c "
           "SET turns = c.turns + 1, model = %s, updated_at = %s "
           f"WHERE c.id = %s AND c.{quote('user')} = %s {waiting} RETURNING c.id, c.turns) "
           f"INSERT INTO {quote(Message._meta.db_table)} (conversation_id, turn, "
           f"{', '.join(quote(f.column) for f in fields)}) "
           f"SELECT c.id, c.turns, {', '.join(['%s'] * len(fields))} FROM c "
           "RETURNING id, turn")
    return sql, fields


def finish_turn(conversation_id: str, user_message: dict[str, Any], reply: dict[str, Any],
                window: list[dict[str, Any]]) -> dict[str, Any]:
    """Store the assistant's reply, count its tokens, refresh the cached window and,
    once committed, ask a worker to remember the user's message if it is worth it."""
    usage = reply.get("usage") or {}
    with transaction.atomic():
        message = Message.objects.create(
            conversation_id=conversation_id, turn=user_message["turn"], role=Role.ASSISTANT,
            content=reply["content"], model=reply.get("model", ""),
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            latency_ms=reply.get("latency_ms"))
        Conversation.objects.filter(pk=conversation_id).update(
            prompt_tokens=F("prompt_tokens") + message.prompt_tokens,
            completion_tokens=F("completion_tokens") + message.completion_tokens,
            updated_at=timezone.now())
        # Only a user's message of some length is remembered (``memory.worth_keeping``):
        # a turn without one hands the workers nothing.
        if len(text_of(user_message["content"]).strip()) >= settings.OPENCLAW_MEMORY_MIN_CHARS:
            transaction.on_commit(lambda: _enqueue_remember([user_message["id"]]))
    stored = message_dict(message)
    _cache_window(conversation_id, user_message["turn"], [*window, stored])
    return stored


def refuse_message(message_id: int) -> None:
    """A plugin refused this message: leave it out of later turns' context."""
    Message.objects.filter(pk=message_id).update(in_context=False)


def _enqueue_remember(message_ids: list[int]) -> None:
    try:
        current_app.send_task(REMEMBER_TASK, [message_ids],
                              queue=settings.OPENCLAW_MEMORY_QUEUE)
    except Exception:  # the broker is down: the answer stands, the memory is missed
        logger.exception("could not enqueue remembering messages %s", message_ids)


# --- the short-term window -------------------------------------------------------------


_UNREAD = object()


def window_key(conversation_id: str) -> str:
    return f"chat:window:{conversation_id}"


def window(conversation_id: str, current: dict[str, Any]) -> list[dict[str, Any]]:
    """The last ``OPENCLAW_MEMORY_WINDOW`` turns, the current one (``current``, the
    user's message just stored) included: from the cache when it holds every turn
    before this one, else from the database."""
    try:
        token = cache.get(window_key(conversation_id))
    except Exception:  # the cache is down: the database answers
        logger.warning("window cache unavailable", exc_info=True)
        token = None
    return _window(conversation_id, current, _cached_window(token, current["turn"] - 1))


async def awindow(conversation_id: str, current: dict[str, Any]) -> list[dict[str, Any]]:
    """``window`` for async code: the cache read from the event loop (no thread hop);
    the database, in a thread, only on a miss."""

    if not shared_state.available():
        return await sync_to_async(window)(conversation_id, current)
    key = window_key(conversation_id)
    token = shared_state.seen(key, _UNREAD)  # the turn may have read it ahead
    if token is _UNREAD:
        try:
            (token,) = await shared_state.get_many([key])
        except Exception:
            logger.warning("window cache unavailable", exc_info=True)
            token = None
    earlier = _cached_window(token, current["turn"] - 1)
    if earlier is None:
        return await sync_to_async(_window)(conversation_id, current, None)
    return _window(conversation_id, current, earlier)


def _window(conversation_id: str, current: dict[str, Any],
            earlier: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    turn, size = current["turn"], max(1, settings.OPENCLAW_MEMORY_WINDOW)
    if earlier is None:
        earlier = [message_dict(m) for m in Message.objects.filter(
            Q(turn__gt=turn - size) | Q(turn=0), conversation_id=conversation_id,
            in_context=True, turn__lt=turn).order_by("turn", "id")]
    return [m for m in earlier if m["turn"] > turn - size or m["turn"] == 0] + [current]


def _cached_window(token: str | None, through_turn: int) -> list[dict[str, Any]] | None:
    """The cached window if it was written after turn ``through_turn`` (else a miss: a
    turn without a reply, or a cache that was cleared or evicted)."""
    if not isinstance(token, str):
        return None
    try:
        payload = json.loads(crypto.decrypt(token))
    except (crypto.DecryptionError, ValueError):
        return None
    return payload["messages"] if payload.get("turn") == through_turn else None


def _cache_window(conversation_id: str, turn: int, messages: list[dict[str, Any]]) -> None:
    keep = max(1, settings.OPENCLAW_MEMORY_WINDOW) - 1  # the next turn adds its own
    messages = [m for m in messages if m["turn"] > turn - keep or m["turn"] == 0]
    token = crypto.encrypt(json.dumps({"turn": turn, "messages": messages},
                                      ensure_ascii=False))
    try:
        cache.set(window_key(conversation_id), token, WINDOW_CACHE_TIMEOUT_S)
    except Exception:
        logger.warning("could not cache the window of %s", conversation_id, exc_info=True)


def forget_window(conversation_id: str) -> None:
    cache.delete(window_key(conversation_id))


# --- the seed's session JSON -----------------------------------------------------------


def export_session(conversation: Conversation) -> dict[str, Any]:
    """``{session_id, messages: [{role, content, timestamp}], context_vectors}``: the
    topic embedding first, then the conversation's memories' embeddings; ``title``
    and ``model`` ride along."""
    messages = [{"role": m.role, "content": m.value, "timestamp": m.created_at.isoformat()}
                for m in conversation.messages.order_by("turn", "id")]
    vectors = [] if conversation.topic_vector is None else [_floats(conversation.topic_vector)]
    vectors += [_floats(v) for v in conversation.memories.order_by("id")
                .values_list("embedding", flat=True)]
    return {"session_id": str(conversation.pk), "title": conversation.title,
            "model": conversation.model, "messages": messages, "context_vectors": vectors}


def _floats(vector) -> list[float]:
    return [float(x) for x in vector]


def import_session(data: Any, user: str, new_id: bool = False) -> Conversation:
    """A conversation from the seed's session JSON. Its ``session_id`` is kept when it
    is a UUID not in use (``new_id`` gives a fresh one instead); the first context
    vector becomes the topic embedding, and the memories are derived again from the
    messages by a worker. Bad input raises ``ConversationError`` and stores nothing."""
    if not isinstance(data, dict):
        raise ConversationError("invalid_session", _("A session must be a JSON object."))
    messages = _session_messages(data.get("messages"))
    topic = _session_topic(data.get("context_vectors", []))
    session_id = _session_id(data.get("session_id"), new_id)
    with transaction.atomic():
        conversation = Conversation.objects.create(
            id=session_id, user=user, owner=owner_of(user),
            title=str(data.get("title") or "")[:200], model=str(data.get("model") or "")[:200],
            topic_vector=topic, created_at=messages[0][3] if messages else timezone.now())
        rows, turn = [], 0
        for role, content, in_context, timestamp in messages:
            turn += role == Role.USER
            stored, fmt = Message.stored(content)
            rows.append(Message(conversation=conversation, turn=0 if role == Role.SYSTEM
                                else max(turn, 1), role=role, content=stored,
                                content_format=fmt, in_context=in_context,
                                created_at=timestamp))
        created = Message.objects.bulk_create(rows)
        conversation.turns = turn
        conversation.save(update_fields=["turns"])
        ids = [m.pk for m in created if m.role == Role.USER]
        transaction.on_commit(lambda: _enqueue_remember(ids))
    return conversation


def _session_id(value: Any, new_id: bool) -> uuid.UUID:
    if new_id or value in (None, ""):
        return uuid.uuid4()
    try:
        session_id = uuid.UUID(str(value))
    except ValueError:
        raise ConversationError("invalid_session", _(
            "“session_id” %(value)r is not a UUID; import it as a new conversation "
            "instead.") % {"value": value}) from None
    if Conversation.objects.filter(pk=session_id).exists():
        raise ConversationError("conversation_exists", _(
            "A conversation “%(id)s” already exists; import it as a new conversation "
            "instead.") % {"id": session_id})
    return session_id


def _session_messages(value: Any) -> list[tuple[str, Any, bool, datetime]]:
    if not isinstance(value, list):
        raise ConversationError("invalid_session", _("“messages” must be a list."))
    result = []
    for index, item in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(item, dict) or item.get("role") not in Role.values:
            raise ConversationError("invalid_session", _(
                "%(where)s must be an object whose “role” is one of %(roles)s.")
                % {"where": where, "roles": ", ".join(Role.values)})
        content = check_content(item.get("content"), f"{where}.content")
        result.append((item["role"], content, True,
                       _timestamp(item.get("timestamp"), f"{where}.timestamp")))
    return result


def _timestamp(value: Any, where: str) -> datetime:
    if value in (None, ""):
        return timezone.now()
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return datetime.fromtimestamp(value, tz=UTC)
    moment = parse_datetime(value) if isinstance(value, str) else None
    if moment is None:
        raise ConversationError("invalid_session", _(
            "%(where)s must be an ISO 8601 date-time or seconds since the epoch.")
            % {"where": where})
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, UTC)


def _session_topic(value: Any) -> list[float] | None:
    if not isinstance(value, list) or not all(isinstance(v, list) for v in value):
        raise ConversationError("invalid_session", _(
            "“context_vectors” must be a list of vectors (lists of numbers)."))
    for index, vector in enumerate(value):
        if len(vector) != EMBEDDING_DIMENSIONS or not all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                for x in vector):
            raise ConversationError("invalid_session", _(
                "context_vectors[%(index)d] must be %(dims)d finite numbers.")
                % {"index": index, "dims": EMBEDDING_DIMENSIONS})
    return [float(x) for x in value[0]] if value else None


def key_identity(key) -> str:
    """The conversation identity of an API key's holder: its owner's username, or
    ``key:<prefix>`` for a key without an owner."""
    return key.owner.get_username() if key.owner_id else f"key:{key.prefix}"
