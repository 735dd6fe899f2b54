"""Batch jobs: OpenAI batch JSONL in, results and errors JSONL out.

Life of a job (each step a service the Celery tasks in ``jobs.tasks`` call):

1. ``create_job`` — from an uploaded input file; status ``validating``.
2. ``start_job`` — every line checked (JSON object, ``custom_id`` unique, ``method``
   POST, ``url`` the job's endpoint, a valid chat body, a model the key may use);
   bad lines are kept in ``validation_errors`` with their line numbers, good lines
   become ``BatchLine`` rows split into chunks, one ``jobs.batch_chunk`` task each.
3. ``run_chunk`` — the chunk's pending lines nobody else holds, claimed with a lease
   (renewed while they run, ``jobs.liveness``), through the gateway, a few at a time
   (per-model concurrency shared by every worker, the key's limits); each result is
   written, with its usage record, in one transaction and only over a line still
   pending and still this run's: a line is answered, written and counted once however
   often its chunk runs. The chunk task (``run_chunks``) then takes the job's other
   chunks nobody holds — queued behind it, or left by a worker that died.
4. ``finish_if_done`` — once no line is pending: the output file (succeeded lines)
   and the error file (failed lines, then invalid ones), in input order.

``cancel_job`` stops what has not run; ``retry_job`` runs the failed lines again;
beat's watchdog (``jobs.batch_watchdog``) queues again the chunks whose run stopped
renewing its lease, and a job no run has beaten for two leases.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.translation import gettext as _

from chat.v1.wire import completion_of, error_body, parse_chat_body
from inference.engines.base import ChatRequest, Usage
from inference.errors import EngineError
from routing import gateway
from routing.admission import Ticket, admit_sync
from routing.gateway import GatewayError
from routing.key_models import ApiKey
from routing.keys import KeyRefused
from routing.rules import RequestFacts, estimate_tokens
from routing.usage_models import UsageRecord

from . import liveness
from .batch_files import BatchRefused, file_content, validate_lines
from .batch_limits import ModelSlots
from .models import (
    BatchFile,
    BatchJob,
    BatchLine,
    BatchStatus,
    FilePurpose,
    LineStatus,
)

logger = logging.getLogger(__name__)

ENDPOINTS = ("/v1/chat/completions",)
COMPLETION_WINDOWS = ("24h",)
MAX_REPORTED_ERRORS = 1000  # invalid lines listed on the job; the error file has them all
FLUSH_EVERY = 50  # lines written (and cancellation checked) per database round
KEY_LIMIT_WAIT_S = 60.0  # longest wait for a key's rpm/tpm window before retrying
KEY_LIMIT_PATIENCE_S = 24 * 3600.0  # longest a line waits for such windows in all
MAX_CLAIMS = 5  # runs that may take a line up without finishing it before it fails
# The tasks (``jobs.tasks``, which call this module) are queued by name.
START_TASK = "jobs.batch_start"
CHUNK_TASK = "jobs.batch_chunk"


def enqueue(task: str, *args: Any) -> None:
    """Queue one of the jobs' tasks (routed to the ``batch`` queue by its name)."""
    current_app.send_task(task, args)


def enqueue_chunks(job_id: str, chunks: Iterable[int]) -> None:
    for chunk in chunks:
        enqueue(CHUNK_TASK, job_id, chunk)


# --- jobs: create, start --------------------------------------------------------------


def create_job(input_file: BatchFile, *, endpoint: str = "/v1/chat/completions",
               completion_window: str = "24h", metadata: dict | None = None,
               api_key=None, model: str = "", chunk_size: int | None = None) -> BatchJob:
    """A job in ``validating``; its start task is queued when the transaction commits."""
    if endpoint not in ENDPOINTS:
        raise BatchRefused(400, "invalid_endpoint",
                           _("Only %(endpoints)s can be batched here.")
                           % {"endpoints": ", ".join(ENDPOINTS)}, "endpoint")
    if completion_window not in COMPLETION_WINDOWS:
        raise BatchRefused(400, "invalid_completion_window",
                           _("“completion_window” must be “24h”."), "completion_window")
    if input_file.purpose != FilePurpose.BATCH:
        raise BatchRefused(400, "invalid_input_file",
                           _("The input file's purpose must be “batch”."), "input_file_id")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise BatchRefused(400, "invalid_metadata",
                           _("“metadata” must map strings to strings."), "metadata")
    with transaction.atomic():
        job = BatchJob.objects.create(
            input_file=input_file, endpoint=endpoint, completion_window=completion_window,
            metadata=metadata or {}, api_key=api_key, model=model,
            owner=api_key.family if api_key else "",
            chunk_size=chunk_size or settings.OPENCLAW_BATCH_CHUNK_SIZE)
        transaction.on_commit(lambda: enqueue(START_TASK, job.pk))
    return job


def start_job(job_id: str) -> None:
    """Validate the input, store the valid lines in chunks, queue the chunks. Does
    nothing unless the job is still ``validating`` (a redelivered task)."""
    with transaction.atomic():
        job = (BatchJob.objects.select_for_update(of=("self",))
               .select_related("input_file", "api_key").filter(pk=job_id).first())
        if job is None or job.status != BatchStatus.VALIDATING:
            return  # deleted meanwhile, or already started (a redelivered task)
        allowed = job.api_key.allowed_models if job.api_key else ()
        valid, problems = validate_lines(file_content(job.input_file), job.endpoint,
                                         job.model, allowed or ())
        BatchLine.objects.bulk_create(
            [BatchLine(job=job, line=v.line, custom_id=v.custom_id, body=v.body,
                       chunk=index // job.chunk_size) for index, v in enumerate(valid)],
            batch_size=1000)
        job.validation_errors = problems[:MAX_REPORTED_ERRORS]
        job.total, now = len(valid), timezone.now()
        if not valid:
            job.status, job.failed_at = BatchStatus.FAILED, now
            job.set_error(_("No valid line in the input file."))
            job.error_file = _write_file(job, "errors", [_error_row(p) for p in problems])
        else:
            job.status, job.in_progress_at = BatchStatus.IN_PROGRESS, now
        job.heartbeat_at = now
        job.save()
        if valid:
            chunks = range(math.ceil(len(valid) / job.chunk_size))
            transaction.on_commit(lambda: enqueue_chunks(job.pk, chunks))
    if problems:
        logger.info("batch %s: %d invalid line(s), %d valid", job_id, len(problems), len(valid))


# --- running a chunk ------------------------------------------------------------------


@dataclass
class LineResult:
    pk: int
    status: str
    status_code: int
    body: dict[str, Any]
    request_id: str
    usage: dict[str, Any] | None = None  # the line's usage record (fields), if answered


def run_chunk(job_id: str, chunk: int) -> None:
    """Run a chunk's pending lines nobody else holds, then finish the job if nothing
    is left pending."""
    job = BatchJob.objects.select_related("api_key").filter(pk=job_id).first()
    if job is None:
        logger.warning("batch %s no longer exists; chunk %d dropped", job_id, chunk)
        return
    if job.status == BatchStatus.IN_PROGRESS:
        _run_claimed(job, chunk)
    finish_if_done(job_id)


def run_chunks(job_id: str, chunk: int) -> None:
    """The chunk task: ``chunk``, then every other chunk of the job with lines nobody
    holds — queued behind it (their tasks will find nothing left), or left by a worker
    that died (prefetched, or their lease run out) — until none is left."""
    job = BatchJob.objects.select_related("api_key").filter(pk=job_id).first()
    if job is None:
        logger.warning("batch %s no longer exists; chunk %d dropped", job_id, chunk)
        return
    done: set[int] = set()
    next_chunk: int | None = chunk
    while next_chunk is not None and job.status == BatchStatus.IN_PROGRESS:
        _run_claimed(job, next_chunk)
        done.add(next_chunk)
        job.refresh_from_db(fields=["status"])
        next_chunk = free_chunk(job_id, exclude=done)
    finish_if_done(job_id)


def free_lines() -> Q:
    """Lines no run holds: never claimed, given back, or their lease run out."""
    return Q(lease="") | Q(leased_until__lt=Now())


def free_chunk(job_id: str, exclude: Iterable[int] = ()) -> int | None:
    return (BatchLine.objects.filter(free_lines(), job_id=job_id, status=LineStatus.PENDING)
            .exclude(chunk__in=list(exclude)).order_by("chunk")
            .values_list("chunk", flat=True).first())


def claim(job_id: str, chunk: int, token: str) -> list[BatchLine]:
    """Lease the chunk's pending lines nobody holds to the run ``token``; those lines.
    Two runs claiming at once split nothing: PostgreSQL re-checks a row's lease when
    the first run's update commits. A line taken by more than ``MAX_CLAIMS`` runs that
    all ended without writing it (each crashed on it, or its worker died) fails
    instead of running again."""
    BatchLine.objects.filter(free_lines(), job_id=job_id, chunk=chunk,
                             status=LineStatus.PENDING).update(
        lease=token, leased_until=Now() + liveness.lease(), claims=F("claims") + 1)
    lines = list(BatchLine.objects.filter(job_id=job_id, chunk=chunk, lease=token,
                                          status=LineStatus.PENDING).order_by("line"))
    worn = [line for line in lines if line.claims > MAX_CLAIMS]
    if worn:
        logger.warning("batch %s: %d line(s) of chunk %d given up after %d runs",
                       job_id, len(worn), chunk, MAX_CLAIMS)
        write_results(job_id, [_failure(line, line.request_id, 500, "line_runs_exhausted", _(
            "This line was taken up %(count)d times and never finished (its worker died "
            "or failed each time); it was given up.") % {"count": MAX_CLAIMS})
            for line in worn], token)
    return [line for line in lines if line.claims <= MAX_CLAIMS]


def renew(job_id: str, token: str) -> None:
    """A run is alive: its lines' lease extended, the job's heartbeat written."""
    BatchLine.objects.filter(job_id=job_id, lease=token, status=LineStatus.PENDING).update(
        leased_until=Now() + liveness.lease())
    BatchJob.objects.filter(pk=job_id).update(heartbeat_at=timezone.now())


def _held(pks: list[int], token: str) -> set[int]:
    """Which of the lines the run ``token`` still holds (not cancelled, not handed to
    another run after it stalled past its lease)."""
    return set(BatchLine.objects.filter(pk__in=pks, lease=token, status=LineStatus.PENDING)
               .values_list("pk", flat=True))


def _run_claimed(job: BatchJob, chunk: int) -> None:
    token = uuid.uuid4().hex
    lines = claim(job.pk, chunk, token)
    if lines:
        with liveness.Keepalive(lambda: renew(job.pk, token), name=f"batch-{job.pk}"):
            async_to_sync(_run_lines)(job, lines, token)


async def _run_lines(job: BatchJob, lines: list[BatchLine], token: str) -> None:
    """The lines, at most the model's concurrency at once; results written (and
    cancellation checked) every ``FLUSH_EVERY`` lines."""
    queue = list(lines)
    async with ModelSlots() as slots:
        while queue:
            group, queue = queue[:FLUSH_EVERY], queue[FLUSH_EVERY:]
            held = await sync_to_async(_held)([line.pk for line in group], token)
            group = [line for line in group if line.pk in held]
            results = await asyncio.gather(*(_run_line(job, line, slots) for line in group))
            if not await sync_to_async(write_results)(job.pk, results, token):
                return  # cancelled: the rest is not run


async def _run_line(job: BatchJob, line: BatchLine, slots: ModelSlots) -> LineResult:
    model, _stream, _usage, chat = parse_chat_body(json.dumps(line.body).encode())
    request_id = chat.request_id
    key = job.api_key
    started = time.perf_counter()
    ticket = None
    async with slots.hold(model):
        try:
            if key is not None:
                ticket = await _admit(key, model, chat)
            facts = RequestFacts(model=model, messages=chat.messages,
                                 api_key=key.prefix if key else "",
                                 user=str(key.owner_id or "") if key else "")
            completion, meta = await gateway.complete(facts, chat)
        except KeyRefused as exc:
            return _failure(line, request_id, exc.status, exc.code, exc.message)
        except (GatewayError, EngineError) as exc:
            if ticket is not None:  # nothing answered: the reservation is given back
                await sync_to_async(ticket.settle)(0)
            status = exc.status if isinstance(exc, GatewayError) else exc.http_status
            return _failure(line, request_id, status, exc.code, exc.message)
    usage = completion.usage
    if ticket is not None:
        await sync_to_async(ticket.settle)(usage.total_tokens)
    body = completion_of(request_id, int(time.time()), meta.model, completion)
    return LineResult(line.pk, LineStatus.SUCCEEDED, 200, body, request_id,
                      _usage_row(job, model, meta.instance_id, usage, started, 200, request_id))


async def _admit(key: ApiKey, model: str, chat: ChatRequest) -> Ticket:
    """Admit the line (``routing.admission``: the key still valid — not revoked or
    expired; its work outlives a rotation —, the model in its scope, its limits);
    wait out an rpm/tpm window rather than fail (a batch has time), give up on a spent
    budget or a refused key (``KeyRefused``)."""
    estimate = estimate_tokens(chat.messages)
    deadline = time.monotonic() + KEY_LIMIT_PATIENCE_S
    while True:
        try:
            return await sync_to_async(admit_sync)(key=key, model=model, tokens=estimate,
                                                   reserve=chat.max_tokens or 0)
        except KeyRefused as exc:
            left = deadline - time.monotonic()
            if exc.code == "budget_exhausted" or exc.status != 429 or left <= 0:
                raise
            await asyncio.sleep(min(float(exc.retry_after or 1), KEY_LIMIT_WAIT_S, left))


def _failure(line: BatchLine, request_id: str, status: int, code: str,
             message: str) -> LineResult:
    return LineResult(line.pk, LineStatus.FAILED, status, error_body(status, message, code),
                      request_id)


def _usage_row(job: BatchJob, model: str, instance: int | None, usage: Usage, started: float,
               status: int, request_id: str) -> dict[str, Any]:
    """A line's usage record, written with its result (``write_results``)."""
    return {"key_prefix": job.api_key.prefix if job.api_key else "", "endpoint": "batch",
            "model": model[:200], "instance": "" if instance is None else str(instance),
            "tokens_in": usage.prompt_tokens, "tokens_out": usage.completion_tokens,
            "latency_ms": (time.perf_counter() - started) * 1000, "status": status,
            "request_id": request_id[:64]}


def write_results(job_id: str, results: list[LineResult], lease: str | None = None) -> bool:
    """Write results over lines still pending — and, given the run's ``lease``, still
    held by it (a line already written by another run of its chunk, cancelled, or
    handed to another run is left as it is) —, each written line's usage record in the
    same transaction, and the job's counts with its heartbeat. True while the job is
    still wanted (not cancelled)."""
    now = timezone.now()
    usage = []
    with transaction.atomic():
        for result in results:
            line = BatchLine.objects.filter(pk=result.pk, status=LineStatus.PENDING)
            if lease is not None:
                line = line.filter(lease=lease)
            written = line.update(
                status=result.status, status_code=result.status_code, response=result.body,
                request_id=result.request_id, attempts=F("attempts") + 1, finished_at=now,
                lease="", leased_until=None)
            if written and result.usage:
                usage.append(UsageRecord(created_at=now, **result.usage))
        UsageRecord.objects.bulk_create(usage)
        return BatchJob.beat(job_id, **line_counts(job_id))


def line_counts(job_id: str) -> dict[str, int]:
    """The job's ``done`` and ``failed`` as its lines say."""
    counts = dict(BatchLine.objects.filter(job_id=job_id).values_list("status")
                  .annotate(n=Count("id")).values_list("status", "n"))
    return {"done": counts.get(LineStatus.SUCCEEDED, 0),
            "failed": counts.get(LineStatus.FAILED, 0)}


def update_counts(job_id: str) -> None:
    BatchJob.objects.filter(pk=job_id).update(**line_counts(job_id))


# --- finishing ------------------------------------------------------------------------


def finish_if_done(job_id: str) -> bool:
    """Once no line is pending, write the output and error files and mark the job
    completed (or cancelled); True when this call finished it. Safe to call twice."""
    with transaction.atomic():
        job = BatchJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status not in (BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING):
            return False
        if BatchLine.objects.filter(job=job, status=LineStatus.PENDING).exists():
            return False
        update_counts(job_id)
        job.refresh_from_db(fields=["done", "failed"])
        job.finalizing_at = timezone.now()
        _write_outputs(job)
        now = timezone.now()
        if job.status == BatchStatus.CANCELLING:
            job.status, job.cancelled_at = BatchStatus.CANCELLED, now
        else:
            job.status, job.completed_at = BatchStatus.COMPLETED, now
        job.save()
    return True


def _write_outputs(job: BatchJob) -> None:
    """Output and error files, each line once, in input order; earlier ones (a retry)
    are replaced."""
    old = [f for f in (job.output_file_id, job.error_file_id) if f]
    output, errors = [], []
    for line in BatchLine.objects.filter(job=job).order_by("line").iterator(chunk_size=2000):
        if line.status == LineStatus.SUCCEEDED:
            output.append(_result_row(line))
        elif line.status == LineStatus.FAILED:
            errors.append(_result_row(line))
        elif line.status == LineStatus.CANCELLED:
            errors.append({"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": line.custom_id,
                           "response": None, "error": {
                               "code": "batch_cancelled",
                               "message": _("The batch was cancelled before this line ran.")}})
    errors += [_error_row(p) for p in job.validation_errors]
    job.output_file = _write_file(job, "output", output) if output else None
    job.error_file = _write_file(job, "errors", errors) if errors else None
    if old:
        BatchFile.objects.filter(pk__in=old).delete()


def _result_row(line: BatchLine) -> dict[str, Any]:
    return {"id": f"batch_req_{line.pk}", "custom_id": line.custom_id,
            "response": {"status_code": line.status_code, "request_id": line.request_id,
                         "body": line.response},
            "error": None}


def _error_row(problem: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"batch_req_invalid_{problem['line']}", "custom_id": problem.get("custom_id"),
            "line": problem["line"], "response": None,
            "error": {"code": problem["code"], "message": problem["message"],
                      "param": problem.get("param")}}


def _write_file(job: BatchJob, kind: str, rows: list[dict]) -> BatchFile:
    content = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    return BatchFile.objects.create(purpose=FilePurpose.BATCH_OUTPUT, owner=job.owner,
                                    filename=f"{job.pk}_{kind}.jsonl", content=content,
                                    bytes=len(content))


# --- cancel, retry --------------------------------------------------------------------


def cancel_job(job: BatchJob) -> BatchJob:
    """Stop a job: lines not yet run are cancelled (queued chunks then find nothing to
    do, running ones stop at their next write); the results so far are kept."""
    with transaction.atomic():
        job = BatchJob.objects.select_for_update().get(pk=job.pk)
        if job.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
            return job
        if job.finished:
            raise BatchRefused(409, "batch_not_cancellable",
                               _("Batch %(id)s has already finished (%(status)s).")
                               % {"id": job.pk, "status": job.status})
        now = timezone.now()
        job.status, job.cancelling_at, job.cancel_requested = BatchStatus.CANCELLING, now, True
        job.save(update_fields=["status", "cancelling_at", "cancel_requested"])
        BatchLine.objects.filter(job=job, status=LineStatus.PENDING).update(
            status=LineStatus.CANCELLED, finished_at=now)
    finish_if_done(job.pk)
    job.refresh_from_db()
    return job


def retry_job(job: BatchJob) -> int:
    """Run a finished job's failed lines again (nothing else); the number queued."""
    with transaction.atomic():
        job = BatchJob.objects.select_for_update().get(pk=job.pk)
        if not job.finished or job.status == BatchStatus.FAILED and not job.total:
            raise BatchRefused(409, "batch_not_retryable",
                               _("Only a finished batch with failed lines can be retried."))
        failed = BatchLine.objects.filter(job=job, status=LineStatus.FAILED)
        chunks = sorted(set(failed.values_list("chunk", flat=True)))
        count = failed.update(status=LineStatus.PENDING, lease="", leased_until=None)
        if not count:
            return 0
        job.status, job.in_progress_at = BatchStatus.IN_PROGRESS, timezone.now()
        job.heartbeat_at = job.in_progress_at
        job.cancel_requested = False
        job.completed_at = job.cancelled_at = job.cancelling_at = job.failed_at = None
        job.finalizing_at = None
        job.save()
        update_counts(job.pk)
        BatchJob.objects.filter(pk=job.pk).update(progress_base=F("done") + F("failed"))
        transaction.on_commit(lambda: enqueue_chunks(job.pk, chunks))
    return count
