"""Models of the inference app: batch jobs (OpenAI's ``/v1/files`` + ``/v1/batches``,
the admin and ``openclaw batch``). Behaviour lives in ``inference.batch``."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


def _public_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def new_file_id() -> str:
    return _public_id("file-")


def new_batch_id() -> str:
    return _public_id("batch_")


class FilePurpose(models.TextChoices):
    BATCH = "batch", _("batch input")
    BATCH_OUTPUT = "batch_output", _("batch output")


class BatchFile(models.Model):
    """An uploaded or produced file, OpenAI's ``file`` object. The bytes live in the
    database, so every web replica and worker reads them without a shared disk."""

    id = models.CharField(primary_key=True, max_length=40, default=new_file_id, editable=False)
    purpose = models.CharField(_("purpose"), max_length=20, choices=FilePurpose.choices)
    filename = models.CharField(_("file name"), max_length=255)
    content = models.BinaryField(_("content"))
    bytes = models.PositiveBigIntegerField(_("size (bytes)"), default=0)
    # The key family (a key and its rotated successors) that owns it; empty: operators.
    owner = models.CharField(_("owner key"), max_length=16, blank=True, db_index=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("batch file")
        verbose_name_plural = _("batch files")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.id} ({self.filename})"


class BatchStatus(models.TextChoices):
    """OpenAI's batch statuses."""

    VALIDATING = "validating", _("validating")
    FAILED = "failed", _("failed")
    IN_PROGRESS = "in_progress", _("in progress")
    FINALIZING = "finalizing", _("finalizing")
    COMPLETED = "completed", _("completed")
    EXPIRED = "expired", _("expired")
    CANCELLING = "cancelling", _("cancelling")
    CANCELLED = "cancelled", _("cancelled")


FINISHED = {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED,
            BatchStatus.CANCELLED}


class BatchJob(models.Model):
    """A JSONL file of requests run on the ``batch`` queue, chunk by chunk.

    ``done``/``failed``/``total`` count lines (``total`` excludes the lines refused
    by validation, listed in ``validation_errors`` with their line numbers)."""

    id = models.CharField(primary_key=True, max_length=40, default=new_batch_id,
                          editable=False)
    status = models.CharField(_("status"), max_length=16, choices=BatchStatus.choices,
                              default=BatchStatus.VALIDATING, db_index=True)
    endpoint = models.CharField(_("endpoint"), max_length=64, default="/v1/chat/completions")
    model = models.CharField(
        _("model"), max_length=200, blank=True,
        help_text=_("When set, every line is sent to this model (its own “model” is "
                    "replaced)."))
    completion_window = models.CharField(_("completion window"), max_length=8, default="24h")
    input_file = models.ForeignKey(BatchFile, models.PROTECT, related_name="+",
                                   verbose_name=_("input file"))
    output_file = models.ForeignKey(BatchFile, models.SET_NULL, null=True, blank=True,
                                    related_name="+", verbose_name=_("output file"))
    error_file = models.ForeignKey(BatchFile, models.SET_NULL, null=True, blank=True,
                                   related_name="+", verbose_name=_("error file"))
    owner = models.CharField(_("owner key"), max_length=16, blank=True, db_index=True)
    api_key = models.ForeignKey("routing.ApiKey", models.SET_NULL, null=True, blank=True,
                                related_name="+", verbose_name=_("API key"),
                                help_text=_("Whose scope and limits the lines respect."))
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)
    validation_errors = models.JSONField(_("invalid lines"), default=list, blank=True)
    error = models.TextField(_("error"), blank=True)
    chunk_size = models.PositiveIntegerField(_("lines per chunk"), default=100)
    total = models.PositiveIntegerField(_("lines"), default=0)
    done = models.PositiveIntegerField(_("succeeded"), default=0)
    failed = models.PositiveIntegerField(_("failed"), default=0)
    # Lines already finished when the job (re)started running: a retry's rate counts
    # only the lines it runs.
    progress_base = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now, db_index=True)
    in_progress_at = models.DateTimeField(null=True, blank=True)
    finalizing_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("batch job")
        verbose_name_plural = _("batch jobs")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.id

    @property
    def expires_at(self):
        return self.created_at + timedelta(hours=24)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def processed(self) -> int:
        return self.done + self.failed

    def rate(self) -> float | None:
        """Lines finished per second since the job started running."""
        run = self.processed - self.progress_base
        if not self.in_progress_at or run <= 0:
            return None
        end = self.finalizing_at or self.cancelled_at or timezone.now()
        seconds = (end - self.in_progress_at).total_seconds()
        return run / seconds if seconds > 0 else None

    def eta_seconds(self) -> float | None:
        """Seconds left at the current rate (None before any line finished or once done)."""
        rate = self.rate()
        if rate is None or self.finished:
            return None
        return max(0.0, (self.total - self.processed) / rate)


class LineStatus(models.TextChoices):
    PENDING = "pending", _("pending")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


class BatchLine(models.Model):
    """One valid request of a job and its outcome. A chunk task writes a line only
    while it is pending, so a chunk run twice (redelivered after a crash) writes
    each line once."""

    job = models.ForeignKey(BatchJob, models.CASCADE, related_name="lines")
    line = models.PositiveIntegerField(_("line"))  # 1-based, in the input file
    chunk = models.PositiveIntegerField(_("chunk"))
    custom_id = models.CharField(_("custom id"), max_length=512)
    body = models.JSONField(_("request body"))
    status = models.CharField(_("status"), max_length=10, choices=LineStatus.choices,
                              default=LineStatus.PENDING)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response = models.JSONField(_("response body"), null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("batch line")
        verbose_name_plural = _("batch lines")
        ordering = ["job", "line"]
        constraints = [models.UniqueConstraint(fields=["job", "line"],
                                               name="batch_line_unique")]
        indexes = [models.Index(fields=["job", "chunk", "status"], name="batch_line_chunk"),
                   models.Index(fields=["job", "status"], name="batch_line_status")]

    def __str__(self) -> str:
        return f"{self.job_id}:{self.line}"
