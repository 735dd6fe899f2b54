"""``/studio/api/annotations/``, ``/studio/api/datasets/`` and
``/studio/api/finetune/``: the JSON the studio calls for annotation, dataset
export and fine-tuning jobs. Session-authenticated (the studio's sign-in) and
CSRF-protected like the studio's other calls (send ``X-CSRFToken``). Errors are
``{"error": {"message", "field"}}`` with a 4xx status: 401 signed out, 403 without
the permission a call names (``jobs.permissions``: staff holding it).

- ``GET  annotations/?conversation=&rating=&tag=&model=&since=&until=`` → ``{"data": [...]}``
  (one's own; everyone's with ``jobs.view_annotation``)
- ``POST annotations/messages/<id>/`` ``{"rating"?, "corrected_content"?, "tags"?}``
  → the annotation (a reply of one's own conversations; any with ``jobs.add_annotation``
  and ``chat.view_message_content``)
- ``POST datasets/`` (``jobs.add_dataset`` + ``chat.view_message_content``)
  ``{"name", "filters"?, "include_flagged"?}`` → the dataset
- ``GET  datasets/`` (``jobs.view_dataset``) → ``{"data": [...]}``
- ``GET  finetune/jobs/`` (``jobs.view_finetunejob``) → ``{"data": [...]}``;
  ``GET finetune/jobs/<id>/`` → a job with ``losses`` (``[[step, loss], ...]``) for the chart
- ``POST finetune/jobs/`` (``jobs.add_finetunejob``) ``{"base_endpoint_id", "dataset_id",
  "lora_rank"?, …}`` → a job
- ``POST finetune/jobs/<id>/cancel/`` (``jobs.change_finetunejob``) → the job
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
from core.text import uuid_id
from routing.models import ModelEndpoint

from . import annotation, datasets, finetune
from .annotation import AnnotationRefused
from .datasets import DatasetRefused
from .finetune import FineTuneRefused
from .models import Dataset, FineTuneJob
from .permissions import (
    ADD_DATASETS,
    ADD_FINETUNES,
    CHANGE_FINETUNES,
    READ_CONTENT,
    VIEW_DATASETS,
    VIEW_FINETUNES,
    refusal,
)

MAX_LISTED = 500


def _error(message: str, status: int = 400, field: str | None = None) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "field": field}}, status=status)


def api_view(*perms: str, post: tuple[str, ...] | None = None) -> Callable:
    """Signed in; with ``perms``, staff holding them (``post``: those a POST needs
    instead); refusals as JSON errors."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> JsonResponse:
            if not request.user.is_authenticated:
                return _error(_("Sign in first."), 401)
            needed = post if post is not None and request.method == "POST" else perms
            reason = refusal(request.user, needed) if needed else None
            if reason:
                return _error(reason, 403)
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
    try:
        parsed = parse_datetime(value)
    except ValueError:  # well formed, but no such date ("2020-13-45T00:00")
        parsed = None
    if parsed is None:
        raise AnnotationRefused(_("“%(key)s” must be an ISO date-time.") % {"key": key},
                                field=key)
    return parsed


def _text(request: HttpRequest, key: str) -> str | None:
    """A query parameter (None when empty), refused when it holds NUL, which no
    database text can."""
    value = request.GET.get(key) or None
    if value is not None and "\x00" in value:
        raise AnnotationRefused(_("“%(key)s” must be text.") % {"key": key}, field=key)
    return value


def _conversation(request: HttpRequest) -> str | None:
    value = request.GET.get("conversation") or None
    if value is not None and uuid_id(value) is None:
        raise AnnotationRefused(_("“conversation” must be a conversation's id (a UUID)."),
                                field="conversation")
    return value


@require_GET
@ensure_csrf_cookie  # a client that lists first can then post
@api_view()
def annotation_list(request: HttpRequest) -> JsonResponse:
    queryset = annotation.annotations_for(
        request.user, conversation_id=_conversation(request),
        rating=_text(request, "rating"), tag=_text(request, "tag"),
        model=_text(request, "model"), since=_when(request, "since"),
        until=_when(request, "until"))
    return JsonResponse({"data": [annotation.annotation_dict(a, reader=request.user)
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
@api_view(VIEW_DATASETS, post=(ADD_DATASETS, READ_CONTENT))  # an export is decrypted content
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
@api_view(VIEW_FINETUNES, post=(ADD_FINETUNES,))
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
@api_view(VIEW_FINETUNES)
def job_detail(request: HttpRequest, job_id: int) -> JsonResponse:
    return JsonResponse(finetune.job_dict(_job(job_id)))


@require_POST
@api_view(CHANGE_FINETUNES)
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
