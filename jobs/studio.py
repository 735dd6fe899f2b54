"""The studio's Jobs page: batch jobs and fine-tuning jobs with their progress
(done / failed / total, rate, ETA; steps and the last training loss), refreshed every
two seconds by ``studio/jobs.js`` from ``api/jobs/``; cancel and retry from the page.
Staff with the jobs' model permissions only, as in the admin (``jobs.permissions``):
jobs belong to API keys and the operator, not to a studio user."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from core.text import object_id
from jobs import batch, finetune
from jobs.batch import BatchRefused
from jobs.finetune import FineTuneRefused
from jobs.models import BatchJob, FineTuneJob
from jobs.permissions import (
    CHANGE_BATCHES,
    CHANGE_FINETUNES,
    VIEW_BATCHES,
    VIEW_FINETUNES,
    may_see_jobs,
    refusal,
    staff_with,
)

LISTED = 50  # most recent jobs of each kind


def batch_row(job: BatchJob) -> dict[str, Any]:
    rate, eta = job.rate(), job.eta_seconds()
    return {"id": job.pk, "status": job.status, "status_label": job.get_status_display(),
            "model": job.model, "total": job.total,
            "done": job.done, "failed": job.failed,
            "rate": round(rate, 1) if rate else None,
            "eta_s": round(eta) if eta is not None else None,
            "created": job.created_at.isoformat(), "finished": job.finished,
            "retryable": job.finished and job.failed > 0,
            "output_file_id": job.output_file_id, "error_file_id": job.error_file_id}


def finetune_row(job: FineTuneJob) -> dict[str, Any]:
    return {"id": job.pk, "status": job.status, "status_label": job.get_status_display(),
            "base": str(job.base_endpoint),
            "step": job.step, "total_steps": job.total_steps,
            "progress": round(job.progress, 3),
            "loss": job.losses[-1][1] if job.losses else None,
            "losses": job.losses[-500:],  # [[step, loss], …] for the chart
            "result": job.result_endpoint.name if job.result_endpoint else None,
            "error": job.error, "created": job.created_at.isoformat(),
            "finished": job.finished}


def _refused(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": {"message": message}}, status=status)


def json_view(*perms: str) -> Callable:
    """Signed in (401), staff holding ``perms`` (403), refusals in the page's JSON shape."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> JsonResponse:
            if not request.user.is_authenticated:
                return _refused(401, _("Sign in first."))
            reason = refusal(request.user, perms)
            if reason:
                return _refused(403, reason)
            return view(request, *args, **kwargs)
        return wrapped
    return decorate


@login_required(login_url="studio:login")
@require_GET
def page(request: HttpRequest) -> HttpResponse:
    if not may_see_jobs(request.user):
        raise PermissionDenied
    return render(request, "studio/jobs.html", {})


@require_GET
@json_view()
def jobs(request: HttpRequest) -> JsonResponse:
    """The jobs of each kind the user may view (403 when neither)."""
    if not may_see_jobs(request.user):
        return _refused(403, refusal(request.user, (VIEW_BATCHES,)) or "")
    batches = BatchJob.objects.order_by("-created_at")[:LISTED] \
        if staff_with(request.user, VIEW_BATCHES) else []
    tunings = FineTuneJob.objects.select_related("base_endpoint", "result_endpoint") \
        .order_by("-created_at")[:LISTED] if staff_with(request.user, VIEW_FINETUNES) else []
    return JsonResponse({"batches": [batch_row(j) for j in batches],
                         "finetunes": [finetune_row(j) for j in tunings]})


@require_POST
@json_view(CHANGE_BATCHES)
def batch_action(request: HttpRequest, job_id: str, action: str) -> JsonResponse:
    job = BatchJob.objects.filter(pk=job_id).first() if object_id(job_id) else None
    if job is None:
        return _refused(404, _("No batch job %(id)s.") % {"id": job_id})
    try:
        if action == "cancel":
            job = batch.cancel_job(job)
        else:  # "retry": the URL names only these two
            batch.retry_job(job)
            job.refresh_from_db()
    except BatchRefused as exc:
        return _refused(exc.status, exc.message)
    return JsonResponse(batch_row(job))


@require_POST
@json_view(CHANGE_FINETUNES)
def finetune_cancel(request: HttpRequest, job_id: int) -> JsonResponse:
    job = FineTuneJob.objects.filter(pk=job_id).first()
    if job is None:
        return _refused(404, _("No fine-tuning job %(id)s.") % {"id": job_id})
    try:
        return JsonResponse(finetune_row(finetune.cancel_job(job)))
    except FineTuneRefused as exc:
        return _refused(409, str(exc))
