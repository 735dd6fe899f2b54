"""Batch jobs: OpenAI batch JSONL in, results and errors JSONL out.

Life of a job (each step a service the Celery tasks in ``batch_tasks`` call):

1. ``create_job`` — from an uploaded input file; status ``validating``.
2. ``start_job`` — every line checked (JSON object, ``custom_id`` unique, ``method``
   POST, ``url`` the job's endpoint, a valid chat body, a model the key may use);
   bad lines are kept in ``validation_errors`` with their line numbers, good lines
   become ``BatchLine`` rows split into chunks, one ``inference.batch_chunk`` task each.
3. ``run_chunk`` — the chunk's pending lines through the gateway, a few at a time
   (per-model concurrency shared by every worker, the key's limits), results written
   only over pending lines: a chunk run twice writes each line once.
4. ``finish_if_done`` — once no line is pending: the output file (succeeded lines)
   and the error file (failed lines, then invalid ones), in input order.

``cancel_job`` stops what has not run; ``retry_job`` runs the failed lines again.
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
from django.conf import settings
from django.db import transaction
from django.db.models import Count, F
from django.utils import timezone
from django.utils.translation import gettext as _

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


class BatchRefused(Exception):
    """A request about files or batches that cannot be done: status, code, message."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param


# --- files ----------------------------------------------------------------------------


def create_file(content: bytes, filename: str, purpose: str = FilePurpose.BATCH,
                owner: str = "") -> BatchFile:
    """Store an uploaded file (OpenAI's ``files.create``)."""
    if purpose not in FilePurpose.values:
        raise BatchRefused(400, "invalid_purpose",
                           _("“purpose” must be “batch” here."), "purpose")
    if len(content) > settings.OPENCLAW_BATCH_MAX_FILE_BYTES:
        raise BatchRefused(400, "file_too_large",
                           _("The file is larger than %(n)d bytes.")
                           % {"n": settings.OPENCLAW_BATCH_MAX_FILE_BYTES}, "file")
    return BatchFile.objects.create(content=content, bytes=len(content), purpose=purpose,
                                    filename=filename[:255] or "upload.jsonl", owner=owner)


def file_content(file: BatchFile) -> bytes:
    return bytes(file.content)


def file_object(file: BatchFile) -> dict[str, Any]:
    """OpenAI's ``file`` object."""
    return {"id": file.id, "object": "file", "bytes": file.bytes,
            "created_at": int(file.created_at.timestamp()), "filename": file.filename,
            "purpose": file.purpose, "status": "processed", "status_details": None,
            "expires_at": None}


# --- validation -----------------------------------------------------------------------


@dataclass
class ValidLine:
    line: int
    custom_id: str
    body: dict[str, Any]


def _problem(line: int, message: str, param: str | None = None, custom_id: str | None = None,
             code: str = "invalid_request") -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line,
            "custom_id": custom_id}


def validate_lines(raw: bytes, endpoint: str, model: str = "",
                   allowed_models: Iterable[str] = ()) -> tuple[list[ValidLine], list[dict]]:
    """(valid lines, problems) of an input file; each problem names its 1-based line."""
    from chat.api import InvalidBody, parse_chat_body

    allowed = set(allowed_models)
    valid: list[ValidLine] = []
    problems: list[dict] = []
    seen: set[str] = set()
    for number, text in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except ValueError as exc:
            problems.append(_problem(number, _("Not valid JSON: %(error)s") % {"error": exc}))
            continue
        if not isinstance(item, dict):
            problems.append(_problem(number, _("Each line must be a JSON object.")))
            continue
        custom_id = item.get("custom_id")
        problem = _line_problem(item, custom_id, seen, endpoint)
        if problem is None:
            body = {**item["body"], "model": model or item["body"].get("model")}
            try:
                _model, stream, _usage, _chat = parse_chat_body(json.dumps(body).encode())
                if stream:
                    raise InvalidBody(_("“stream” is not allowed in a batch."), "body.stream")
                if allowed and body["model"] not in allowed:
                    raise InvalidBody(_("This API key may not use the model “%(model)s”.")
                                      % {"model": body["model"]}, "body.model")
            except InvalidBody as exc:
                param = exc.param if (exc.param or "").startswith("body") else (
                    f"body.{exc.param}" if exc.param else "body")
                problem = (exc.message, param)
        if problem is not None:
            problems.append(_problem(number, problem[0], problem[1],
                                     custom_id if isinstance(custom_id, str) else None))
            continue
        seen.add(custom_id)
        valid.append(ValidLine(number, custom_id, body))
    return valid, problems


def _line_problem(item: dict, custom_id: Any, seen: set[str],
                  endpoint: str) -> tuple[str, str] | None:
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 512:
        return _("“custom_id” must be a non-empty string (at most 512 characters)."), "custom_id"
    if custom_id in seen:
        return _("“custom_id” %(id)s appears on an earlier line.") % {"id": custom_id}, \
            "custom_id"
    if item.get("method") != "POST":
        return _("“method” must be “POST”."), "method"
    if item.get("url") != endpoint:
        return _("“url” must be the batch's endpoint, %(endpoint)s.") % {"endpoint": endpoint}, \
            "url"
    if not isinstance(item.get("body"), dict):
        return _("“body” must be a JSON object."), "body"
    return None


# --- jobs: create, start --------------------------------------------------------------


def create_job(input_file: BatchFile, *, endpoint: str = "/v1/chat/completions",
               completion_window: str = "24h", metadata: dict | None = None,
               api_key=None, model: str = "", chunk_size: int | None = None) -> BatchJob:
    """A job in ``validating``; its start task is queued when the transaction commits."""
    from .batch_tasks import start_batch

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
        transaction.on_commit(lambda: start_batch.delay(job.pk))
    return job


def start_job(job_id: str) -> None:
    """Validate the input, store the valid lines in chunks, queue the chunks. Does
    nothing unless the job is still ``validating`` (a redelivered task)."""
    from .batch_tasks import run_batch_chunk

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
            job.error = _("No valid line in the input file.")
            job.error_file = _write_file(job, "errors", [_error_row(p) for p in problems])
        else:
            job.status, job.in_progress_at = BatchStatus.IN_PROGRESS, now
        job.save()
        if valid:
            chunks = range(math.ceil(len(valid) / job.chunk_size))
            transaction.on_commit(lambda: [run_batch_chunk.delay(job.pk, c) for c in chunks])
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


def run_chunk(job_id: str, chunk: int) -> None:
    """Run a chunk's pending lines, then finish the job if nothing is left pending."""
    job = BatchJob.objects.select_related("api_key").filter(pk=job_id).first()
    if job is None:
        logger.warning("batch %s no longer exists; chunk %d dropped", job_id, chunk)
        return
    if job.status == BatchStatus.IN_PROGRESS:
        lines = list(BatchLine.objects.filter(job=job, chunk=chunk, status=LineStatus.PENDING)
                     .order_by("line"))
        if lines:
            async_to_sync(_run_lines)(job, lines)
    finish_if_done(job_id)


async def _run_lines(job: BatchJob, lines: list[BatchLine]) -> None:
    """The lines, at most the model's concurrency at once; results written (and
    cancellation checked) every ``FLUSH_EVERY`` lines."""
    from .batch_limits import ModelSlots

    queue = list(lines)
    async with ModelSlots() as slots:
        while queue:
            group, queue = queue[:FLUSH_EVERY], queue[FLUSH_EVERY:]
            results = await asyncio.gather(*(_run_line(job, line, slots) for line in group))
            if not await sync_to_async(write_results)(job.pk, results):
                return  # cancelled: the rest is not run


async def _run_line(job: BatchJob, line: BatchLine, slots) -> LineResult:
    from chat.api import parse_chat_body
    from inference.errors import EngineError
    from routing import gateway
    from routing.gateway import GatewayError
    from routing.key_services import KeyRefused
    from routing.rules import RequestFacts

    model, _stream, _usage, chat = parse_chat_body(json.dumps(line.body).encode())
    request_id = chat.request_id
    key = job.api_key
    started = time.perf_counter()
    async with slots.hold(model):
        try:
            if key is not None:
                await _admit(key, chat)
            facts = RequestFacts(model=model, messages=chat.messages,
                                 api_key=key.prefix if key else "",
                                 user=str(key.owner_id or "") if key else "")
            completion, meta = await gateway.complete(facts, chat)
        except KeyRefused as exc:
            return _failure(line, request_id, exc.status, exc.code, exc.message)
        except GatewayError as exc:
            return _failure(line, request_id, exc.status, exc.code, exc.message)
        except EngineError as exc:
            return _failure(line, request_id, exc.http_status, exc.code, exc.message)
    usage = completion.usage
    if key is not None and usage.total_tokens:
        from routing.key_services import record_usage

        await sync_to_async(record_usage)(key, usage.total_tokens)
    _log_usage(job, model, meta.instance_id, usage, started, 200, request_id)
    body = {"id": request_id, "object": "chat.completion", "created": int(time.time()),
            "model": meta.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text},
                         "logprobs": None, "finish_reason": completion.finish_reason or "stop"}],
            "usage": {"prompt_tokens": usage.prompt_tokens,
                      "completion_tokens": usage.completion_tokens,
                      "total_tokens": usage.total_tokens}}
    return LineResult(line.pk, LineStatus.SUCCEEDED, 200, body, request_id)


async def _admit(key, chat) -> None:
    """Count the line against the key's limits; wait out an rpm/tpm window rather than
    fail (a batch has time), give up on a spent budget (``KeyRefused``)."""
    from routing.key_services import KeyRefused, check_limits
    from routing.rules import estimate_tokens

    estimate = estimate_tokens(chat.messages)
    while True:
        try:
            return await sync_to_async(check_limits)(key, estimate)
        except KeyRefused as exc:
            if exc.code == "budget_exhausted" or exc.status != 429:
                raise
            await asyncio.sleep(min(float(exc.retry_after or 1), KEY_LIMIT_WAIT_S))


def _failure(line: BatchLine, request_id: str, status: int, code: str,
             message: str) -> LineResult:
    from chat.api import error_body

    return LineResult(line.pk, LineStatus.FAILED, status, error_body(status, message, code),
                      request_id)


def _log_usage(job: BatchJob, model: str, instance: int | None, usage, started: float,
               status: int, request_id: str) -> None:
    from routing.usage import log_usage

    log_usage(key_prefix=job.api_key.prefix if job.api_key else "", model=model,
              instance=instance, tokens_in=usage.prompt_tokens,
              tokens_out=usage.completion_tokens,
              latency_ms=(time.perf_counter() - started) * 1000, status=status,
              endpoint="batch", request_id=request_id)


def write_results(job_id: str, results: list[LineResult]) -> bool:
    """Write results over lines still pending (a line already written — by an earlier
    run of the same chunk — or cancelled meanwhile is left as it is); update the
    job's counts. True while the job is still running."""
    now = timezone.now()
    with transaction.atomic():
        for result in results:
            BatchLine.objects.filter(pk=result.pk, status=LineStatus.PENDING).update(
                status=result.status, status_code=result.status_code, response=result.body,
                request_id=result.request_id, attempts=F("attempts") + 1, finished_at=now)
        update_counts(job_id)
    return BatchJob.objects.filter(pk=job_id, status=BatchStatus.IN_PROGRESS).exists()


def update_counts(job_id: str) -> None:
    counts = dict(BatchLine.objects.filter(job_id=job_id).values_list("status")
                  .annotate(n=Count("id")).values_list("status", "n"))
    BatchJob.objects.filter(pk=job_id).update(done=counts.get(LineStatus.SUCCEEDED, 0),
                                              failed=counts.get(LineStatus.FAILED, 0))


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
        job.status, job.cancelling_at = BatchStatus.CANCELLING, now
        job.save(update_fields=["status", "cancelling_at"])
        BatchLine.objects.filter(job=job, status=LineStatus.PENDING).update(
            status=LineStatus.CANCELLED, finished_at=now)
    finish_if_done(job.pk)
    job.refresh_from_db()
    return job


def retry_job(job: BatchJob) -> int:
    """Run a finished job's failed lines again (nothing else); the number queued."""
    from .batch_tasks import run_batch_chunk

    with transaction.atomic():
        job = BatchJob.objects.select_for_update().get(pk=job.pk)
        if not job.finished or job.status == BatchStatus.FAILED and not job.total:
            raise BatchRefused(409, "batch_not_retryable",
                               _("Only a finished batch with failed lines can be retried."))
        failed = BatchLine.objects.filter(job=job, status=LineStatus.FAILED)
        chunks = sorted(set(failed.values_list("chunk", flat=True)))
        count = failed.update(status=LineStatus.PENDING)
        if not count:
            return 0
        job.status, job.in_progress_at = BatchStatus.IN_PROGRESS, timezone.now()
        job.completed_at = job.cancelled_at = job.cancelling_at = job.failed_at = None
        job.finalizing_at = None
        job.save()
        update_counts(job.pk)
        BatchJob.objects.filter(pk=job.pk).update(progress_base=F("done") + F("failed"))
        transaction.on_commit(lambda: [run_batch_chunk.delay(job.pk, c) for c in chunks])
    return count


# --- progress and the OpenAI shape ----------------------------------------------------


def progress_line(job: BatchJob, width: int = 30) -> str:
    """``[#####-----] 512/1000 ok 3 failed · 120 lines/s · ETA 4 s · in_progress``."""
    total = job.total or 1
    filled = round(width * job.processed / total) if job.total else 0
    rate, eta = job.rate(), job.eta_seconds()
    parts = [f"[{'#' * filled}{'-' * (width - filled)}] {job.done}/{job.total} ok",
             f"{job.failed} failed"]
    if rate:
        parts.append(f"{rate:.0f} lines/s")
    if eta is not None:
        parts.append(f"ETA {eta:.0f} s")
    parts.append(job.status)
    return " · ".join(parts)


def _ts(value) -> int | None:
    return int(value.timestamp()) if value else None


def batch_object(job: BatchJob) -> dict[str, Any]:
    """OpenAI's ``batch`` object (plus ``x_openclaw`` progress)."""
    errors = None
    if job.validation_errors:
        errors = {"object": "list", "data": [
            {"code": p["code"], "message": p["message"], "param": p.get("param"),
             "line": p["line"]} for p in job.validation_errors]}
    rate, eta = job.rate(), job.eta_seconds()
    return {
        "id": job.pk, "object": "batch", "endpoint": job.endpoint, "errors": errors,
        "input_file_id": job.input_file_id, "completion_window": job.completion_window,
        "status": job.status, "output_file_id": job.output_file_id,
        "error_file_id": job.error_file_id, "created_at": _ts(job.created_at),
        "in_progress_at": _ts(job.in_progress_at), "expires_at": _ts(job.expires_at),
        "finalizing_at": _ts(job.finalizing_at), "completed_at": _ts(job.completed_at),
        "failed_at": _ts(job.failed_at), "expired_at": None,
        "cancelling_at": _ts(job.cancelling_at), "cancelled_at": _ts(job.cancelled_at),
        "request_counts": {"total": job.total, "completed": job.done, "failed": job.failed},
        "metadata": job.metadata or None, "model": job.model or None,
        "x_openclaw": {"lines_per_s": round(rate, 1) if rate else None,
                       "eta_s": round(eta, 1) if eta is not None else None},
    }
