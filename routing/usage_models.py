"""Usage records and audit events: append-only rows written by Celery tasks in
batches (``routing.usage``), never on a request's path."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils.translation import gettext_lazy as _


class UsageRecord(models.Model):
    """One answered (or refused) model call: who, which model and instance, tokens,
    timings and the HTTP status. The id is made by the caller, so a batch delivered
    twice by the broker is written once."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(_("time"), db_index=True)
    key_prefix = models.CharField(_("API key"), max_length=16, blank=True, db_index=True)
    user = models.CharField(_("user"), max_length=150, blank=True)
    endpoint = models.CharField(_("endpoint"), max_length=32, blank=True,
                                help_text=_("chat, embeddings, batch…"))
    model = models.CharField(_("model"), max_length=200, blank=True, db_index=True)
    instance = models.CharField(_("instance"), max_length=64, blank=True)
    tokens_in = models.PositiveIntegerField(_("tokens in"), default=0)
    tokens_out = models.PositiveIntegerField(_("tokens out"), default=0)
    latency_ms = models.FloatField(_("latency (ms)"), default=0)
    ttft_ms = models.FloatField(_("time to first token (ms)"), null=True, blank=True)
    status = models.PositiveSmallIntegerField(_("status"), default=200)
    request_id = models.CharField(_("request id"), max_length=64, blank=True)

    class Meta:
        verbose_name = _("usage record")
        verbose_name_plural = _("usage records")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["key_prefix", "model", "created_at"],
                                name="usage_key_model_time")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.key_prefix or '-'} {self.model}"


class AuditEvent(models.Model):
    """Something an operator or the system did that someone may later need to
    account for: admin changes, key lifecycle, plugin blocks, failed logins."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(_("time"), db_index=True)
    action = models.CharField(_("action"), max_length=64, db_index=True)
    actor = models.CharField(_("actor"), max_length=150, blank=True, db_index=True)
    target = models.CharField(_("target"), max_length=255, blank=True)
    detail = models.JSONField(_("detail"), default=dict, blank=True)

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.target}"
