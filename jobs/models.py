"""Models of the jobs app: batch jobs (OpenAI's ``/v1/files`` + ``/v1/batches``, the
admin and ``openclaw batch``; behaviour in ``jobs.batch``), and the training data and
jobs: annotations, datasets, fine-tuning jobs."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from core.fields import EncryptedBinaryField, EncryptedJSONField, EncryptedTextField


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
    database, so every web replica and worker reads them without a shared disk; they
    are AES-256-GCM encrypted there, like message content."""

    id = models.CharField(primary_key=True, max_length=40, default=new_file_id, editable=False)
    purpose = models.CharField(_("purpose"), max_length=20, choices=FilePurpose.choices)
    filename = models.CharField(_("file name"), max_length=255)
    content = EncryptedBinaryField(_("content"))
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


# --- every long job -------------------------------------------------------------------


class Job(models.Model):
    """What every long job has, whatever it runs: when it was created, the error it
    ended with, a cancel request its worker reads between steps, and a heartbeat —
    written with each progress write (``beat``) and every few seconds besides while a
    worker holds the job (``jobs.liveness``), so a task redelivered after its worker
    died can be told from a duplicate of one still running (``running_elsewhere``), and
    beat's watchdog (``jobs.resume_stalled``) hands the work of a job nobody beats for
    to another worker (``stalled``; ``requeued`` counts how often).

    Each kind names its finished statuses (``FINISHED``), its units of work
    (``units``: done, planned) and its current run (``run``: started, ended, units
    done before it); progress, rate and ETA follow from those, for the admin, the
    studio's Jobs page and the CLI (``progress_line``, ``jobs.progress.follow``)."""

    MAX_ERROR_CHARS: ClassVar[int] = 5000
    FINISHED: ClassVar[frozenset[str]] = frozenset()

    error = models.TextField(_("error"), blank=True)
    cancel_requested = models.BooleanField(_("cancel requested"), default=False)
    heartbeat_at = models.DateTimeField(_("last progress"), null=True, blank=True,
                                        editable=False)
    requeued = models.PositiveIntegerField(
        _("re-queued"), default=0, editable=False,
        help_text=_("Times its work was handed to another worker because no worker had "
                    "written its progress for a while (a worker killed or lost)."))
    created_at = models.DateTimeField(_("created"), default=timezone.now, db_index=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    status: str  # each kind's own choices

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED

    def units(self) -> tuple[int, int]:
        """(done, planned) units of work: lines, training steps."""
        raise NotImplementedError

    def run(self) -> tuple[datetime | None, datetime | None, int]:
        """(started, ended, units done before it) of the current run: a retry's rate
        counts only what it runs."""
        raise NotImplementedError

    def progress_line(self, width: int = 30) -> str:
        """One line for the CLI: a bar, the counts, the status."""
        raise NotImplementedError

    @property
    def progress(self) -> float:
        """0–1: units done of the units planned."""
        done, planned = self.units()
        return min(1.0, done / planned) if planned else 0.0

    def rate(self) -> float | None:
        """Units finished per second since the current run started."""
        started, ended, before = self.run()
        ran = self.units()[0] - before
        if started is None or ran <= 0:
            return None
        seconds = ((ended or timezone.now()) - started).total_seconds()
        return ran / seconds if seconds > 0 else None

    def eta_seconds(self) -> float | None:
        """Seconds left at the current rate (None before a unit finished or once done)."""
        rate = self.rate()
        if rate is None or self.finished:
            return None
        done, planned = self.units()
        return max(0.0, (planned - done) / rate)

    def running_elsewhere(self, stale_after: timedelta) -> bool:
        """A worker wrote this job's progress within ``stale_after``: it is alive."""
        return self.heartbeat_at is not None and (
            timezone.now() - self.heartbeat_at < stale_after)

    @classmethod
    def stalled(cls, statuses: Iterable[str], stale_after: timedelta) -> models.QuerySet:
        """Jobs in one of ``statuses`` whose heartbeat (or, never beaten, creation) is
        older than ``stale_after``: no worker is running them."""
        cutoff = timezone.now() - stale_after
        return cls._default_manager.filter(
            Q(status__in=list(statuses)),  # each kind's own field
            Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff))

    def set_error(self, message: str) -> None:
        self.error = message[:self.MAX_ERROR_CHARS]

    @classmethod
    def beat(cls, pk: Any, **progress: Any) -> bool:
        """Write a job's progress fields with its heartbeat; False when a cancel was
        asked for since (its worker stops)."""
        cls._default_manager.filter(pk=pk).update(heartbeat_at=timezone.now(), **progress)
        return not cls._default_manager.filter(pk=pk, cancel_requested=True).exists()


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


class BatchJob(Job):
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
    chunk_size = models.PositiveIntegerField(_("lines per chunk"), default=100)
    total = models.PositiveIntegerField(_("lines"), default=0)
    done = models.PositiveIntegerField(_("succeeded"), default=0)
    failed = models.PositiveIntegerField(_("failed"), default=0)
    # Lines already finished when the job (re)started running: a retry's rate counts
    # only the lines it runs.
    progress_base = models.PositiveIntegerField(default=0, editable=False)
    in_progress_at = models.DateTimeField(null=True, blank=True)
    finalizing_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    FINISHED = frozenset({BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED,
                          BatchStatus.CANCELLED})

    class Meta(Job.Meta):
        verbose_name = _("batch job")
        verbose_name_plural = _("batch jobs")

    def __str__(self) -> str:
        return self.id

    @property
    def expires_at(self) -> datetime:
        return self.created_at + timedelta(hours=24)

    @property
    def processed(self) -> int:
        return self.done + self.failed

    def units(self) -> tuple[int, int]:
        return self.processed, self.total

    def run(self) -> tuple[datetime | None, datetime | None, int]:
        return self.in_progress_at, self.finalizing_at or self.cancelled_at, self.progress_base

    def progress_line(self, width: int = 30) -> str:
        """``[#####-----] 512/1000 ok 3 failed · 120 lines/s · ETA 4 s · in_progress``."""
        filled = round(width * self.progress)
        rate, eta = self.rate(), self.eta_seconds()
        parts = [f"[{'#' * filled}{'-' * (width - filled)}] {self.done}/{self.total} ok",
                 f"{self.failed} failed"]
        if rate:
            parts.append(f"{rate:.0f} lines/s")
        if eta is not None:
            parts.append(f"ETA {eta:.0f} s")
        parts.append(self.status)
        return " · ".join(parts)


class LineStatus(models.TextChoices):
    PENDING = "pending", _("pending")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


class BatchLine(models.Model):
    """One valid request of a job and its outcome. A chunk run claims its pending lines
    with a lease (``lease``: the run's token, ``leased_until``: renewed while it runs)
    and writes a line only while it is pending and still its own, so two runs — a chunk
    redelivered after a crash, a dead worker's chunk handed to another — never call or
    write the same line both. The request and response bodies are encrypted at rest."""

    job = models.ForeignKey(BatchJob, models.CASCADE, related_name="lines")
    line = models.PositiveIntegerField(_("line"))  # 1-based, in the input file
    chunk = models.PositiveIntegerField(_("chunk"))
    custom_id = models.CharField(_("custom id"), max_length=512)
    body = EncryptedJSONField(_("request body"))
    status = models.CharField(_("status"), max_length=10, choices=LineStatus.choices,
                              default=LineStatus.PENDING)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response = EncryptedJSONField(_("response body"), null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The chunk run holding the line ("": none) and until when (database clock); a
    # lease not renewed by then is free for another run.
    lease = models.CharField(max_length=32, blank=True, default="", editable=False)
    leased_until = models.DateTimeField(null=True, blank=True, editable=False)
    claims = models.PositiveSmallIntegerField(default=0, editable=False)  # runs that took it

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


# --- annotation, datasets and fine-tuning --------------------------------------------
# Behaviour lives in ``jobs.annotation``, ``jobs.datasets`` and ``jobs.finetune``.


class Rating(models.TextChoices):
    UP = "up", _("thumbs up")
    DOWN = "down", _("thumbs down")
    NONE = "none", _("no rating")


class Annotation(models.Model):
    """A person's judgement of one assistant reply: a rating, a corrected version
    (encrypted, like the reply itself) and free tags. One per message and annotator;
    the latest edit wins."""

    message = models.ForeignKey("chat.Message", models.CASCADE, related_name="annotations",
                                verbose_name=_("message"))
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True,
                                  blank=True, related_name="annotations",
                                  verbose_name=_("annotator"))
    rating = models.CharField(_("rating"), max_length=8, choices=Rating.choices,
                              default=Rating.NONE, db_index=True)
    corrected_content = EncryptedTextField(
        _("corrected reply"), blank=True,
        help_text=_("Replaces the reply in exported datasets; empty keeps the original."))
    tags = models.JSONField(_("tags"), default=list, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("annotation")
        verbose_name_plural = _("annotations")
        ordering = ["-updated_at"]
        constraints = [models.UniqueConstraint(fields=["message", "annotator"],
                                               name="annotation_one_per_annotator")]

    def __str__(self) -> str:
        return f"{self.message_id}: {self.rating}"


class Dataset(models.Model):
    """A versioned chat-format JSONL export (``{"messages": [...]}`` a line). The bytes
    live in the database, encrypted like batch files, so any worker can train on them."""

    name = models.CharField(_("name"), max_length=100, db_index=True)
    version = models.PositiveIntegerField(_("version"), default=1)
    filters = models.JSONField(_("filters"), default=dict, blank=True)
    include_flagged = models.BooleanField(
        _("include flagged content"), default=False,
        help_text=_("Keep conversations with personal data or secrets (off: left out)."))
    line_count = models.PositiveIntegerField(_("lines"), default=0)
    excluded_count = models.PositiveIntegerField(_("conversations left out"), default=0)
    content = EncryptedBinaryField(_("content"))
    sha256 = models.CharField(_("content hash (SHA-256)"), max_length=64)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True,
                                   blank=True, related_name="+", verbose_name=_("created by"))
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("dataset")
        verbose_name_plural = _("datasets")
        ordering = ["name", "-version"]
        constraints = [models.UniqueConstraint(fields=["name", "version"],
                                               name="dataset_name_version")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class FineTuneQueue(models.TextChoices):
    CPU = "cpu", _("CPU workers (queue cpu)")
    GPU = "gpu", _("GPU workers (queue gpu)")


class FineTuneStatus(models.TextChoices):
    QUEUED = "queued", _("queued")
    RUNNING = "running", _("running")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


class FineTuneJob(Job):
    """LoRA fine-tuning of a ``transformers`` endpoint's model on a dataset, run by a
    Celery worker. ``losses`` holds ``[step, loss]`` pairs; the merged model is saved
    under ``output_path`` and registered as ``result_endpoint`` (disabled)."""

    base_endpoint = models.ForeignKey("routing.ModelEndpoint", models.PROTECT,
                                      related_name="+", verbose_name=_("base model"))
    dataset = models.ForeignKey(Dataset, models.PROTECT, related_name="finetune_jobs",
                                verbose_name=_("dataset"))
    suffix = models.CharField(_("name suffix"), max_length=40, blank=True,
                              help_text=_("The new model is named BASE-ft-SUFFIX (or "
                                          "BASE-ft-JOB ID)."))
    lora_rank = models.PositiveSmallIntegerField(_("LoRA rank"), default=8)
    lora_alpha = models.PositiveSmallIntegerField(_("LoRA alpha"), default=16)
    learning_rate = models.FloatField(_("learning rate"), default=2e-4)
    epochs = models.PositiveSmallIntegerField(_("epochs"), default=3)
    max_steps = models.PositiveIntegerField(
        _("max steps"), default=0, help_text=_("0: as many as the epochs take."))
    queue = models.CharField(_("queue"), max_length=8, choices=FineTuneQueue.choices,
                             default=FineTuneQueue.CPU)
    status = models.CharField(_("status"), max_length=12, choices=FineTuneStatus.choices,
                              default=FineTuneStatus.QUEUED, db_index=True)
    total_steps = models.PositiveIntegerField(_("steps"), default=0)
    step = models.PositiveIntegerField(_("step"), default=0)
    losses = models.JSONField(_("training loss"), default=list, blank=True)
    output_path = models.CharField(_("output folder"), max_length=500, blank=True)
    result_endpoint = models.ForeignKey("routing.ModelEndpoint", models.SET_NULL, null=True,
                                        blank=True, related_name="+",
                                        verbose_name=_("result model"))
    celery_task_id = models.CharField(_("task id"), max_length=64, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True,
                                   blank=True, related_name="+", verbose_name=_("created by"))
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

    FINISHED = frozenset({FineTuneStatus.SUCCEEDED, FineTuneStatus.FAILED,
                          FineTuneStatus.CANCELLED})

    class Meta(Job.Meta):
        verbose_name = _("fine-tuning job")
        verbose_name_plural = _("fine-tuning jobs")

    def __str__(self) -> str:
        return f"fine-tune {self.pk} of {self.base_endpoint_id}"

    def units(self) -> tuple[int, int]:
        return self.step, self.total_steps

    def run(self) -> tuple[datetime | None, datetime | None, int]:
        return self.started_at, self.finished_at, 0

    def progress_line(self, width: int = 30) -> str:
        """``[#####.....] 12/36 loss 5.61 running`` for the CLI."""
        filled = round(width * self.progress)
        loss = f"loss {self.losses[-1][1]:.4f}" if self.losses else "loss —"
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.step}/"
                f"{self.total_steps or '?'} {loss} {self.status}")
        if self.result_endpoint is not None:
            line += f" → {self.result_endpoint.name}"
        return line + (f": {self.error}" if self.error else "")
