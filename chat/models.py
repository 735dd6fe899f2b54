"""Models of the chat app: conversations, their messages (content encrypted at rest)
and long-term memory (encrypted text, a pgvector embedding under an HNSW index)."""

from __future__ import annotations

import json
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from pgvector.django import HnswIndex, VectorField

from openclaw_site.fields import EncryptedTextField

EMBEDDING_DIMENSIONS = 384  # all-MiniLM-L6-v2


class Conversation(models.Model):
    """One conversation: a LangGraph thread (thread id = ``id``) and its messages.

    ``user`` is the caller's identity (a username, or another stable name such as an
    API key's ``key:<prefix>``); ``owner`` is set when it names a Django user, so the
    admin can show people their own conversations.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("owner"), null=True,
                              blank=True, on_delete=models.CASCADE,
                              related_name="conversations")
    user = models.CharField(_("user"), max_length=150, db_index=True,
                            help_text=_("Who the conversation belongs to."))
    title = models.CharField(_("title"), max_length=200, blank=True)
    model = models.CharField(_("model"), max_length=200, blank=True,
                             help_text=_("The model asked for on the last turn."))
    turns = models.PositiveIntegerField(_("turns"), default=0)
    prompt_tokens = models.PositiveBigIntegerField(_("prompt tokens"), default=0)
    completion_tokens = models.PositiveBigIntegerField(_("completion tokens"), default=0)
    topic_vector = VectorField(_("topic embedding"), dimensions=EMBEDDING_DIMENSIONS,
                               null=True, blank=True, editable=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title or str(self.id)


class Role(models.TextChoices):
    SYSTEM = "system", _("system")
    USER = "user", _("user")
    ASSISTANT = "assistant", _("assistant")
    TOOL = "tool", _("tool")


class ContentFormat(models.TextChoices):
    TEXT = "text", _("text")
    PARTS = "parts", _("content parts (JSON)")


class Message(models.Model):
    """One message of a conversation. ``content`` is AES-256-GCM encrypted in the
    database (the key id is stored with each value; ``openclaw keys rotate-data``
    re-encrypts with the current key); content parts are kept as their JSON."""

    conversation = models.ForeignKey(Conversation, verbose_name=_("conversation"),
                                     on_delete=models.CASCADE, related_name="messages")
    turn = models.PositiveIntegerField(_("turn"), help_text=_("0 for system messages."))
    role = models.CharField(_("role"), max_length=16, choices=Role.choices)
    content = EncryptedTextField(_("content"), blank=True)
    content_format = models.CharField(_("content format"), max_length=8,
                                      choices=ContentFormat.choices, default=ContentFormat.TEXT)
    model = models.CharField(_("model"), max_length=200, blank=True,
                             help_text=_("The model that answered (assistant messages)."))
    prompt_tokens = models.PositiveIntegerField(_("prompt tokens"), default=0)
    completion_tokens = models.PositiveIntegerField(_("completion tokens"), default=0)
    latency_ms = models.FloatField(_("latency (ms)"), null=True, blank=True)
    in_context = models.BooleanField(
        _("in context"), default=True,
        help_text=_("Off for a message a plugin refused: later turns leave it out."))
    created_at = models.DateTimeField(_("timestamp"), default=timezone.now)

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        ordering = ["conversation", "turn", "id"]
        indexes = [models.Index(fields=["conversation", "turn"], name="chat_message_turn")]
        permissions = [("view_message_content", _("Can read decrypted message content"))]

    def __str__(self) -> str:
        return f"{self.conversation_id} #{self.turn} {self.role}"

    @property
    def value(self) -> str | list[dict]:
        """The content as the model sees it: text, or the list of content parts."""
        return json.loads(self.content) if self.content_format == ContentFormat.PARTS \
            else self.content

    @staticmethod
    def stored(value: str | list[dict]) -> tuple[str, str]:
        """``(content, content_format)`` to store ``value`` (text or content parts)."""
        if isinstance(value, list):
            return json.dumps(value, ensure_ascii=False), ContentFormat.PARTS
        return value, ContentFormat.TEXT


class MemoryItem(models.Model):
    """Something worth remembering across conversations: its text (encrypted), where
    it came from and its embedding, searched by cosine distance (HNSW). The vector
    itself cannot be encrypted and still searched."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("owner"), null=True,
                              blank=True, on_delete=models.CASCADE,
                              related_name="memories")
    user = models.CharField(_("user"), max_length=150,
                            help_text=_("Whose memory it is; recall searches only these."))
    text = EncryptedTextField(_("text"))
    source = models.ForeignKey(Message, verbose_name=_("source message"), null=True,
                               blank=True, on_delete=models.SET_NULL, related_name="memories")
    conversation = models.ForeignKey(Conversation, verbose_name=_("conversation"), null=True,
                                     blank=True, on_delete=models.SET_NULL,
                                     related_name="memories")
    embedding = VectorField(_("embedding"), dimensions=EMBEDDING_DIMENSIONS)
    created_at = models.DateTimeField(_("created"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("memory")
        verbose_name_plural = _("memories")
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user"], name="chat_memory_user"),
            HnswIndex(name="chat_memory_embedding_hnsw", fields=["embedding"], m=16,
                      ef_construction=64, opclasses=["vector_cosine_ops"]),
        ]

    def __str__(self) -> str:
        return f"memory {self.pk} of {self.user}"
