"""``/studio/api/annotations/``, ``/studio/api/datasets/`` and
``/studio/api/finetune/``: the JSON the studio calls for annotation, dataset
export and fine-tuning jobs. Session-authenticated (the studio's sign-in) and
CSRF-protected like the studio's other calls (send ``X-CSRFToken``). Errors are
``{"error": {"message", "field"}}`` with a 4xx status.

- ``GET  annotations/?conversation=&rating=&tag=&model=&since=&until=`` → ``{"data": [...]}``
- ``POST annotations/messages/<id>/`` ``{"rating"?, "corrected_content"?, "tags"?}``
  → the annotation
- ``POST datasets/`` (staff) ``{"name", "filters"?, "include_flagged"?}`` → the dataset
- ``GET  datasets/`` (staff) → ``{"data": [...]}``
- ``GET  finetune/jobs/`` (staff) → ``{"data": [...]}``; ``GET finetune/jobs/<id>/`` → a job
  with ``losses`` (``[[step, loss], ...]``) for the chart
- ``POST finetune/jobs/`` (staff) ``{"base_endpoint_id", "dataset_id", "lora_rank"?, …}`` → a job
- ``POST finetune/jobs/<id>/cancel/`` (staff) → the job
- ``POST qa/match/`` ``{"text"}`` → ``{"match": {"pair_id", "question", "answer",
  "similarity", "threshold"} | null}`` (annotation reply: the curated pair that answers)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from chat import curated
from routing.models import ModelEndpoint

from . import annotation, datasets, finetune
from .annotation import AnnotationRefused
from .datasets import DatasetRefused
from .finetune import FineTuneRefused
from .models import Dataset, FineTuneJob

MAX_LISTED = 500


def _error(message: str, status: int = 400, field: str | None = None) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "field": field}}, status=status)


def api_view(staff: bool = False) -> Callable:
    """Signed in (staff when asked), JSON bodies parsed, refusals as JSON errors."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> JsonResponse:
            if not request.user.is_authenticated:
                return _error(_("Sign in first."), 401)
            if staff and not request.user.is_staff:
                return _error(_("Only staff may do this."), 403)
            try:
                return view(request, *args, **kwargs)
            except (AnnotationRefused, DatasetRefused, FineTuneRefused) as exc:
                return _error(exc.message, getattr(exc, "status", 400), exc.field)
        return wrapped
    return decorate


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AnnotationRefused(_("The body is not valid JSON.")) from None
    if not isinstance(body, dict):
        raise AnnotationRefused(_("The body must be a JSON object."))
    return body


def _when(request: HttpRequest, key: str):
    value = request.GET.get(key)
    if not value:
        return None
    parsed = parse_datetime(value)
    if parsed is None:
        raise AnnotationRefused(_("“%(key)s” must be an ISO date-time.") % {"key": key},
                                field=key)
    return parsed


@require_GET
@ensure_csrf_cookie  # a client that lists first can then post
@api_view()
def annotation_list(request: HttpRequest) -> JsonResponse:
    queryset = annotation.annotations_for(
        request.user, conversation_id=request.GET.get("conversation") or None,
        rating=request.GET.get("rating") or None, tag=request.GET.get("tag") or None,
        model=request.GET.get("model") or None, since=_when(request, "since"),
        until=_when(request, "until"))
    return JsonResponse({"data": [annotation.annotation_dict(a)
                                  for a in queryset[:MAX_LISTED]]})


@require_POST
@api_view()
def annotate_message(request: HttpRequest, message_id: int) -> JsonResponse:
    data = annotation.clean_input(_body(request))
    saved = annotation.annotate(request.user, message_id, data)
    return JsonResponse(annotation.annotation_dict(saved))


def dataset_dict(dataset: Dataset) -> dict[str, Any]:
    return {"id": dataset.pk, "name": dataset.name, "version": dataset.version,
            "filters": dataset.filters, "include_flagged": dataset.include_flagged,
            "line_count": dataset.line_count, "excluded_count": dataset.excluded_count,
            "sha256": dataset.sha256, "created_at": dataset.created_at.isoformat()}


@require_http_methods(["GET", "POST"])
@api_view(staff=True)
def dataset_collection(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        return JsonResponse({"data": [dataset_dict(d) for d in
                                      Dataset.objects.defer("content")[:MAX_LISTED]]})
    body = _body(request)
    include = body.get("include_flagged", False)
    if not isinstance(include, bool):
        raise DatasetRefused(_("“include_flagged” must be true or false."),
                             field="include_flagged")
    dataset = datasets.export_dataset(body.get("name", ""), body.get("filters"),
                                      include_flagged=include, user=request.user)
    return JsonResponse(dataset_dict(dataset), status=201)


JOB_FIELDS = ("lora_rank", "lora_alpha", "learning_rate", "epochs", "max_steps", "queue",
              "suffix")


@require_http_methods(["GET", "POST"])
@api_view(staff=True)
def job_collection(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        jobs = FineTuneJob.objects.select_related("base_endpoint", "dataset",
                                                  "result_endpoint")[:MAX_LISTED]
        return JsonResponse({"data": [finetune.job_dict(job) for job in jobs]})
    body = _body(request)
    base = ModelEndpoint.objects.filter(pk=_int(body, "base_endpoint_id")).first()
    if base is None:
        raise FineTuneRefused(_("No such base model endpoint."), field="base_endpoint_id")
    dataset = Dataset.objects.filter(pk=_int(body, "dataset_id")).first()
    if dataset is None:
        raise FineTuneRefused(_("No such dataset."), field="dataset_id")
    unknown = sorted(set(body) - set(JOB_FIELDS) - {"base_endpoint_id", "dataset_id"})
    if unknown:
        raise FineTuneRefused(_("Unknown field “%(field)s”.") % {"field": unknown[0]},
                              field=unknown[0])
    job = finetune.create_job(base, dataset, user=request.user,
                              **{k: body[k] for k in JOB_FIELDS if k in body})
    return JsonResponse(finetune.job_dict(job), status=201)


def _int(body: dict, key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FineTuneRefused(_("“%(key)s” must be an integer id.") % {"key": key}, field=key)
    return value


def _job(job_id: int) -> FineTuneJob:
    job = FineTuneJob.objects.select_related("base_endpoint", "dataset",
                                             "result_endpoint").filter(pk=job_id).first()
    if job is None:
        raise AnnotationRefused(_("No such job."), status=404)
    return job


@require_GET
@api_view(staff=True)
def job_detail(request: HttpRequest, job_id: int) -> JsonResponse:
    return JsonResponse(finetune.job_dict(_job(job_id)))


@require_POST
@api_view(staff=True)
def job_cancel(request: HttpRequest, job_id: int) -> JsonResponse:
    job = finetune.cancel_job(_job(job_id))
    return JsonResponse(finetune.job_dict(_job(job.pk)))


@require_POST
@api_view()
def qa_match(request: HttpRequest) -> JsonResponse:
    text = _body(request).get("text")
    if not isinstance(text, str):
        raise AnnotationRefused(_("“text” must be a string."), field="text")
    found = curated.match_reply(text)
    return JsonResponse({"match": found.as_dict() if found else None})


app_name = "training"

urlpatterns = [
    path("annotations/", annotation_list, name="annotations"),
    path("annotations/messages/<int:message_id>/", annotate_message, name="annotate"),
    path("datasets/", dataset_collection, name="datasets"),
    path("finetune/jobs/", job_collection, name="finetune-jobs"),
    path("finetune/jobs/<int:job_id>/", job_detail, name="finetune-job"),
    path("finetune/jobs/<int:job_id>/cancel/", job_cancel, name="finetune-cancel"),
    path("qa/match/", qa_match, name="qa-match"),
]
