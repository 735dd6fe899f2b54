"""The studio's Jobs page: batch jobs and fine-tuning jobs with their progress
(done / failed / total, rate, ETA; steps and the last training loss), refreshed every
two seconds by ``studio/jobs.js`` from ``api/jobs/``; cancel and retry from the page.
Staff only, as in the admin: jobs belong to API keys and the operator, not to a
studio user."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from jobs import batch, finetune
from jobs.batch import BatchRefused
from jobs.finetune import FineTuneRefused
from jobs.models import BatchJob, FineTuneJob

LISTED = 50  # most recent jobs of each kind


def batch_row(job: BatchJob) -> dict[str, Any]:
    rate, eta = job.rate(), job.eta_seconds()
    return {"id": job.pk, "status": job.status, "model": job.model, "total": job.total,
            "done": job.done, "failed": job.failed,
            "rate": round(rate, 1) if rate else None,
            "eta_s": round(eta) if eta is not None else None,
            "created": job.created_at.isoformat(), "finished": job.finished,
            "retryable": job.finished and job.failed > 0,
            "output_file_id": job.output_file_id, "error_file_id": job.error_file_id}


def finetune_row(job: FineTuneJob) -> dict[str, Any]:
    return {"id": job.pk, "status": job.status, "base": str(job.base_endpoint),
            "step": job.step, "total_steps": job.total_steps,
            "progress": round(job.progress, 3),
            "loss": job.losses[-1][1] if job.losses else None,
            "losses": job.losses[-500:],  # [[step, loss], …] for the chart
            "result": job.result_endpoint.name if job.result_endpoint else None,
            "error": job.error, "created": job.created_at.isoformat(),
            "finished": job.finished}


@staff_member_required(login_url="studio:login")
@require_GET
def page(request: HttpRequest) -> HttpResponse:
    return render(request, "studio/jobs.html", {})


@staff_member_required(login_url="studio:login")
@require_GET
def jobs(request: HttpRequest) -> JsonResponse:
    batches = BatchJob.objects.order_by("-created_at")[:LISTED]
    tunings = FineTuneJob.objects.select_related("base_endpoint", "result_endpoint") \
        .order_by("-created_at")[:LISTED]
    return JsonResponse({"batches": [batch_row(j) for j in batches],
                         "finetunes": [finetune_row(j) for j in tunings]})


def _refused(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": {"message": message}}, status=status)


@staff_member_required(login_url="studio:login")
@require_POST
def batch_action(request: HttpRequest, job_id: str, action: str) -> JsonResponse:
    job = BatchJob.objects.filter(pk=job_id).first()
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


@staff_member_required(login_url="studio:login")
@require_POST
def finetune_cancel(request: HttpRequest, job_id: int) -> JsonResponse:
    job = FineTuneJob.objects.filter(pk=job_id).first()
    if job is None:
        return _refused(404, _("No fine-tuning job %(id)s.") % {"id": job_id})
    try:
        return JsonResponse(finetune_row(finetune.cancel_job(job)))
    except FineTuneRefused as exc:
        return _refused(409, str(exc))
