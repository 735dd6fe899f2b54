"""A batch job in OpenAI's wire shape: the ``batch`` object of ``/v1/batches`` and of
``openclaw batch status``."""

from __future__ import annotations

from typing import Any

from .models import BatchJob


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
