"""Models of the chat app: conversations, their messages (content encrypted at rest)
and long-term memory (encrypted text, a pgvector embedding under an HNSW index)."""

from __future__ import annotations

import json
import uuid
from typing import ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from pgvector.django import HnswIndex, VectorField

from core.fields import EncryptedTextField

from .workflows.validation import schedule_problems, validate

EMBEDDING_DIMENSIONS = 384  # all-MiniLM-L6-v2


class Conversation(models.Model):
    """One conversation: a LangGraph thread (thread id = ``id``) and its messages.

    ``user`` is the caller's identity (a username, or another stable name such as an
    API key's ``key:<prefix>``); ``owner`` is set when it names a Django user, so the
    admin can show people their own conversations. ``title`` is encrypted at rest, so
    it is searched in Python (``chat.conversations.matching_titles``), and its string
    form is the id: the admin's change log keeps an object's string in clear.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("owner"), null=True,
                              blank=True, on_delete=models.CASCADE,
                              related_name="conversations")
    user = models.CharField(_("user"), max_length=150, db_index=True,
                            help_text=_("Who the conversation belongs to."))
    # Encrypted like messages: a title is the first user message's start.
    title = EncryptedTextField(_("title"), max_length=200, blank=True)
    model = models.CharField(_("model"), max_length=200, blank=True,
                             help_text=_("The model asked for on the last turn."))
    turns = models.PositiveIntegerField(_("turns"), default=0)
    prompt_tokens = models.PositiveBigIntegerField(_("prompt tokens"), default=0)
    completion_tokens = models.PositiveBigIntegerField(_("completion tokens"), default=0)
    topic_vector = VectorField(_("topic embedding"), dimensions=EMBEDDING_DIMENSIONS,
                               null=True, blank=True, editable=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    workflow = models.ForeignKey("Workflow", verbose_name=_("workflow"), null=True,
                                 blank=True, on_delete=models.SET_NULL,
                                 related_name="conversations",
                                 help_text=_("Empty: the default workflow."))
    parent = models.ForeignKey("self", verbose_name=_("forked from"), null=True, blank=True,
                               on_delete=models.SET_NULL, related_name="branches")
    forked_at_turn = models.PositiveIntegerField(_("forked at turn"), null=True, blank=True)
    forked_from_checkpoint = models.CharField(_("forked from checkpoint"), max_length=64,
                                              blank=True)

    class Meta:
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return str(self.id)


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


class DoubleTexting(models.TextChoices):
    """What a send does while a run of the same conversation is still active."""

    ENQUEUE = "enqueue", _("enqueue: run after the active run")
    REJECT = "reject", _("reject the new message")
    INTERRUPT = "interrupt", _("interrupt: cancel the active run, keep its message")
    ROLLBACK = "rollback", _("rollback: cancel the active run and forget its message")


class Workflow(models.Model):
    """An admin-defined graph of typed nodes and edges (``definition``, validated
    JSON) compiled to a LangGraph ``StateGraph`` on first use; ``version`` grows on
    every save, so every process recompiles an edited workflow on its next run."""

    slug = models.SlugField(_("slug"), max_length=100, unique=True,
                            help_text=_("/v1 requests name it as “workflow/<slug>”."))
    name = models.CharField(_("name"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    definition = models.JSONField(
        _("definition"), default=dict,
        help_text=_("{\"entry\": node id, \"nodes\": [{\"id\", \"type\", \"config\"}], "
                    "\"edges\": [{\"source\", \"target\"}]}"))
    default_model = models.CharField(
        _("default model"), max_length=200, blank=True,
        help_text=_("The model of a run that names only the workflow (“workflow/<slug>”)."))
    double_texting = models.CharField(_("double texting"), max_length=16,
                                      choices=DoubleTexting.choices,
                                      default=DoubleTexting.ENQUEUE)
    api_keys = models.ManyToManyField(
        "routing.ApiKey", verbose_name=_("API keys"), blank=True, related_name="workflows",
        help_text=_("New conversations of these keys run this workflow unless they name "
                    "another."))
    is_default = models.BooleanField(
        _("default workflow"), default=False,
        help_text=_("Conversations that pick no workflow run this one (at most one)."))
    enabled = models.BooleanField(_("enabled"), default=True)
    version = models.PositiveIntegerField(_("version"), default=1, editable=False)
    live_version = models.PositiveIntegerField(
        _("published version"), null=True, blank=True, editable=False,
        help_text=_("The saved version whose definition runs; the editor lists every version."))
    created_at = models.DateTimeField(_("created"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    # Declared for the type checker: modeltranslation (chat/translation.py) swaps in a
    # manager class made at run time, which django-stubs' plugin cannot resolve.
    objects: ClassVar[models.Manager[Workflow]]

    class Meta:
        verbose_name = _("workflow")
        verbose_name_plural = _("workflows")
        ordering = ["slug"]
        constraints = [models.UniqueConstraint(
            fields=["is_default"], condition=models.Q(is_default=True),
            name="chat_workflow_one_default")]

    def __str__(self) -> str:
        return self.name or self.slug

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            self.version = models.F("version") + 1
        super().save(*args, **kwargs)
        if not isinstance(self.version, int):
            self.refresh_from_db(fields=["version"])

    def clean(self) -> None:
        def lookup(slug: str) -> dict | None:
            found = Workflow.objects.filter(slug=slug, enabled=True).exclude(pk=self.pk)
            return found.values_list("definition", flat=True).first()

        validate(self.definition, slug=self.slug, lookup=lookup)
        other = Workflow.objects.filter(is_default=True).exclude(pk=self.pk).first()
        if self.is_default and other is not None:
            raise ValidationError({"is_default": _(
                "“%(other)s” is the default workflow; clear it there first.")
                % {"other": other.slug}})


class WorkflowVersion(models.Model):
    """One save of a workflow's definition (with the editor's node positions). A
    version is a draft until it is published: its definition is then copied into
    ``Workflow.definition`` and its number into ``Workflow.live_version``."""

    workflow = models.ForeignKey(Workflow, verbose_name=_("workflow"),
                                 on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField(_("number"))
    definition = models.JSONField(_("definition"), default=dict)
    layout = models.JSONField(_("layout"), default=dict, blank=True,
                              help_text=_("Node positions in the editor: {node id: {x, y}}."))
    note = models.CharField(_("note"), max_length=200, blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("author"), null=True,
                               blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(_("saved"), default=timezone.now, editable=False)
    published_at = models.DateTimeField(_("published"), null=True, blank=True)

    class Meta:
        verbose_name = _("workflow version")
        verbose_name_plural = _("workflow versions")
        ordering = ["workflow", "-number"]
        constraints = [models.UniqueConstraint(fields=["workflow", "number"],
                                               name="chat_workflowversion_unique_number")]

    def __str__(self) -> str:
        return f"{self.workflow_id} v{self.number}"


class RunStatus(models.TextChoices):
    RUNNING = "running", _("running")
    WAITING = "waiting", _("waiting for a person")
    DONE = "done", _("done")
    ERROR = "error", _("failed")
    CANCELLED = "cancelled", _("cancelled")


class WorkflowRun(models.Model):
    """One run of a workflow on a conversation's thread; a run stopped at a
    human-approval node is ``waiting`` until someone approves, edits or rejects it.
    ``interrupt`` (what the approver is shown) is encrypted like messages."""

    conversation = models.ForeignKey(Conversation, verbose_name=_("conversation"),
                                     on_delete=models.CASCADE, related_name="runs")
    workflow = models.ForeignKey(Workflow, verbose_name=_("workflow"), null=True, blank=True,
                                 on_delete=models.SET_NULL, related_name="runs")
    workflow_version = models.PositiveIntegerField(_("workflow version"), null=True,
                                                   blank=True)
    user = models.CharField(_("user"), max_length=150)
    status = models.CharField(_("status"), max_length=16, choices=RunStatus.choices,
                              default=RunStatus.RUNNING, db_index=True)
    node = models.CharField(_("waiting at"), max_length=100, blank=True)
    interrupt = EncryptedTextField(_("interrupt"), blank=True,
                                   help_text=_("What the run asks the approver (JSON)."))
    error = models.CharField(_("error"), max_length=500, blank=True)
    created_at = models.DateTimeField(_("started"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("workflow run")
        verbose_name_plural = _("workflow runs")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.conversation_id} ({self.status})"

    @property
    def interrupt_value(self) -> object:
        return json.loads(self.interrupt) if self.interrupt else None


class WorkflowSchedule(models.Model):
    """Run a workflow on a schedule: a cron expression, or every N seconds. Celery
    beat ticks ``chat.run_due_schedules``, which reads this table and hands each due
    schedule to a worker; ``next_run_at`` moves on as each run is handed out."""

    name = models.CharField(_("name"), max_length=200)
    workflow = models.ForeignKey(Workflow, verbose_name=_("workflow"),
                                 on_delete=models.CASCADE, related_name="schedules")
    cron = models.CharField(_("cron"), max_length=100, blank=True,
                            help_text=_("Five fields, e.g. “0 8 * * 1-5” (UTC)."))
    every_seconds = models.PositiveIntegerField(
        _("every (seconds)"), null=True, blank=True,
        help_text=_("Instead of cron: a fixed interval."))
    user = models.CharField(_("user"), max_length=150,
                            help_text=_("Whose conversation the runs go to."))
    model = models.CharField(_("model"), max_length=200, blank=True,
                             help_text=_("Empty: the workflow's default model."))
    content = EncryptedTextField(_("message"), help_text=_("The user message each run sends."))
    conversation = models.ForeignKey(
        Conversation, verbose_name=_("conversation"), null=True, blank=True,
        on_delete=models.SET_NULL, related_name="+",
        help_text=_("Empty: each run starts a new conversation."))
    enabled = models.BooleanField(_("enabled"), default=True)
    next_run_at = models.DateTimeField(_("next run"), null=True, blank=True, db_index=True)
    last_run_at = models.DateTimeField(_("last run"), null=True, blank=True)
    last_status = models.CharField(_("last status"), max_length=16, blank=True)
    last_conversation = models.ForeignKey(
        Conversation, verbose_name=_("last conversation"), null=True, blank=True,
        on_delete=models.SET_NULL, related_name="+", editable=False)
    last_error = models.CharField(_("last error"), max_length=500, blank=True)

    class Meta:
        verbose_name = _("workflow schedule")
        verbose_name_plural = _("workflow schedules")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        problems = schedule_problems(self.cron, self.every_seconds)
        if not self.model and self.workflow_id and not self.workflow.default_model:
            problems["model"] = _("The workflow has no default model: name one here.")
        if problems:
            raise ValidationError(problems)


class UserPreference(models.Model):
    """What a signed-in user chose once and keeps on every browser: the language of the
    studio and the admin (set by ``?lang=``; core/i18n.py)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, verbose_name=_("user"),
                                on_delete=models.CASCADE, related_name="preference")
    language = models.CharField(_("language"), max_length=16, blank=True,
                                help_text=_("en or zh-hans; empty: the browser's language."))

    class Meta:
        verbose_name = _("user preference")
        verbose_name_plural = _("user preferences")

    def __str__(self) -> str:
        return f"{self.user}: {self.language or '-'}"


class QAPair(models.Model):
    """A curated question and its answer. A turn whose question embeds within
    ``threshold`` cosine similarity of ``question`` is answered with ``answer``
    directly (annotation reply: ``chat.curated``)."""

    question = models.TextField(_("question"))
    answer = models.TextField(_("answer"))
    embedding = VectorField(_("question embedding"), dimensions=384, null=True,
                            editable=False)
    threshold = models.FloatField(
        _("similarity threshold"), default=0.85,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text=_("Least cosine similarity of a question to be answered with this."))
    enabled = models.BooleanField(_("enabled"), default=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("question/answer pair")
        verbose_name_plural = _("question/answer pairs")
        ordering = ["question"]

    def __str__(self) -> str:
        return self.question[:80]


class StoredResponse(models.Model):
    """A Responses API answer kept for ``previous_response_id``, retrieve, delete and
    ``input_items`` (``chat.stored_responses``). The response object and its input
    items are JSON, AES-256-GCM encrypted like message content; ``owner`` is the
    API-key family (its prefix) that made it, the only one that can read it."""

    id = models.CharField(_("id"), max_length=64, primary_key=True)
    owner = models.CharField(_("owner"), max_length=64, db_index=True)
    model = models.CharField(_("model"), max_length=200)
    previous = models.CharField(_("previous response"), max_length=64, blank=True)
    response = EncryptedTextField(_("response"))
    input_items = EncryptedTextField(_("input items"))
    created_at = models.DateTimeField(_("created"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("stored response")
        verbose_name_plural = _("stored responses")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.id


# Tools and MCP servers are the chat app's models too (defined apart: chat/tools/models.py).
from .tools.models import McpServer, Tool, ToolKind, Transport  # noqa: E402, F401
