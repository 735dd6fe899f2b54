"""OpenAI's ``/v1/files`` and ``/v1/batches``: thin async views over
``jobs.batch``, so the SDK's ``files.create`` / ``files.content`` and
``batches.create`` / ``retrieve`` / ``list`` / ``cancel`` work unchanged.

Files and batches belong to the key family (a key and its rotated successors) that
made them; another key sees a 404. Errors come in OpenAI's shape."""

from __future__ import annotations

import json
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from chat.v1.auth import authenticate, refused, rotation_notice
from chat.v1.wire import ApiRequest, error_response
from core.text import object_id as usable_id
from routing.admission import check_scope
from routing.key_models import ApiKey
from routing.keys import KeyRefused

from . import batch, batch_files, batch_wire
from .batch import BatchRefused
from .models import BatchFile, BatchJob

MAX_LIST = 100
MAX_ID_CHARS = 40  # BatchFile.id's and BatchJob.id's


def _not_allowed(allowed: str) -> HttpResponse:
    response = error_response(405, _("Method not allowed."), "method_not_allowed")
    response["Allow"] = allowed
    return response


def _refusal(exc: BatchRefused) -> JsonResponse:
    return error_response(exc.status, exc.message, exc.code, exc.param)


def _missing(kind: str, object_id: str) -> JsonResponse:
    return error_response(404, _("No %(kind)s with id “%(id)s”.") % {"kind": kind,
                                                                     "id": object_id},
                          "not_found")


async def _authenticate(request: HttpRequest) -> ApiKey:
    # Django's request has what authenticate() reads and takes the key it stores, though
    # not with chat.v1.wire.ApiRequest's exact types (method may be None, body read-only).
    return await authenticate(cast(ApiRequest, request))


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BatchRefused(400, "invalid_request", _("The request body is not valid JSON.")) \
            from None
    if not isinstance(body, dict):
        raise BatchRefused(400, "invalid_request", _("The request body must be a JSON object."))
    return body


# --- /v1/files ------------------------------------------------------------------------


@csrf_exempt
@rotation_notice
async def files(request: HttpRequest) -> HttpResponse:
    """POST: upload (multipart ``file`` + ``purpose``); GET: this key's files."""
    if request.method not in ("GET", "POST"):
        return _not_allowed("GET, POST")
    try:
        key = await _authenticate(request)
    except KeyRefused as exc:
        return refused(exc)
    if request.method == "GET":
        rows = await sync_to_async(lambda: [batch_files.file_object(f) for f in BatchFile.objects
                                            .filter(owner=key.family)[:MAX_LIST]])()
        return JsonResponse({"object": "list", "data": rows, "has_more": False})
    upload = request.FILES.get("file")
    if upload is None:
        return error_response(400, _("Send the file as the multipart field “file”."),
                              "invalid_request", "file")
    try:
        created = await sync_to_async(batch_files.create_file)(
            upload.read(), upload.name or "", request.POST.get("purpose", ""), key.family)
    except BatchRefused as exc:
        return _refusal(exc)
    return JsonResponse(batch_files.file_object(created))


async def _owned(request: HttpRequest, model: type[BatchFile] | type[BatchJob], kind: str,
                 object_id: str) -> tuple[Any, HttpResponse | None]:
    """The key's own file or batch ``object_id``, or the answer refusing the request
    (401/403 for the key, 404 for an id that is not the key family's)."""
    try:
        key = await _authenticate(request)
    except KeyRefused as exc:
        return None, refused(exc)
    found = None
    if usable_id(object_id, MAX_ID_CHARS) is not None:  # else no row has it
        found = await model.objects.filter(pk=object_id, owner=key.family).afirst()
    return found, None if found else _missing(kind, object_id)


@csrf_exempt
@rotation_notice
async def file_detail(request: HttpRequest, file_id: str) -> HttpResponse:
    """GET: the file object; DELETE: remove it (not while a batch reads it)."""
    if request.method not in ("GET", "DELETE"):
        return _not_allowed("GET, DELETE")
    found, refusal = await _owned(request, BatchFile, "file", file_id)
    if refusal:
        return refusal
    if request.method == "DELETE":
        if await BatchJob.objects.filter(input_file=found).aexists():
            return error_response(409, _("A batch uses this file as its input."), "file_in_use")
        await found.adelete()
        return JsonResponse({"id": file_id, "object": "file", "deleted": True})
    return JsonResponse(batch_files.file_object(found))


@csrf_exempt
@rotation_notice
async def file_content(request: HttpRequest, file_id: str) -> HttpResponse:
    """The file's bytes (JSONL)."""
    if request.method != "GET":
        return _not_allowed("GET")
    found, refusal = await _owned(request, BatchFile, "file", file_id)
    if refusal:
        return refusal
    response = HttpResponse(batch_files.file_content(found), content_type="application/jsonl")
    response["Content-Disposition"] = f'attachment; filename="{found.filename}"'
    return response


# --- /v1/batches ----------------------------------------------------------------------


@csrf_exempt
@rotation_notice
async def batches(request: HttpRequest) -> HttpResponse:
    """POST: create a batch from an uploaded file; GET: this key's batches, newest
    first (``limit``, ``after``)."""
    if request.method not in ("GET", "POST"):
        return _not_allowed("GET, POST")
    try:
        key = await _authenticate(request)
        if request.method == "GET":
            return JsonResponse(await sync_to_async(_batch_list)(key.family, request.GET))
        return JsonResponse(await sync_to_async(_create_batch)(key, _json_body(request)))
    except KeyRefused as exc:
        return refused(exc)
    except BatchRefused as exc:
        return _refusal(exc)


def _create_batch(key, body: dict[str, Any]) -> dict[str, Any]:
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise BatchRefused(400, "invalid_request", _("“input_file_id” is required."),
                           "input_file_id")
    found = None
    if usable_id(file_id, MAX_ID_CHARS) is not None:
        found = BatchFile.objects.filter(pk=file_id, owner=key.family).first()
    if found is None:
        raise BatchRefused(404, "not_found", _("No file with id “%(id)s”.") % {"id": file_id},
                           "input_file_id")
    model = body.get("model") or ""  # OpenClaw's: one model for every line
    if not isinstance(model, str):
        raise BatchRefused(400, "invalid_request", _("“model” must be a string."), "model")
    if model:
        check_scope(key, model)
    job = batch.create_job(found, endpoint=body.get("endpoint") or "",
                           completion_window=body.get("completion_window") or "",
                           metadata=body.get("metadata"), api_key=key, model=model)
    return batch_wire.batch_object(job)


def _batch_list(owner: str, query) -> dict[str, Any]:
    try:
        limit = max(1, min(MAX_LIST, int(query.get("limit", 20))))
    except ValueError:
        raise BatchRefused(400, "invalid_request", _("“limit” must be an integer."),
                           "limit") from None
    jobs = BatchJob.objects.filter(owner=owner).order_by("-created_at", "-pk")
    after = query.get("after")
    if after:
        anchor = None
        if usable_id(after, MAX_ID_CHARS) is not None:
            anchor = BatchJob.objects.filter(pk=after, owner=owner).first()
        if anchor is None:
            raise BatchRefused(404, "not_found", _("No batch with id “%(id)s”.") % {"id": after},
                               "after")
        jobs = jobs.filter(created_at__lt=anchor.created_at)
    rows = [batch_wire.batch_object(job) for job in jobs[:limit + 1]]
    data = rows[:limit]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(rows) > limit}


@csrf_exempt
@rotation_notice
async def batch_detail(request: HttpRequest, batch_id: str) -> HttpResponse:
    if request.method != "GET":
        return _not_allowed("GET")
    job, refusal = await _owned(request, BatchJob, "batch", batch_id)
    if refusal:
        return refusal
    return JsonResponse(batch_wire.batch_object(job))


@csrf_exempt
@rotation_notice
async def batch_cancel(request: HttpRequest, batch_id: str) -> HttpResponse:
    if request.method != "POST":
        return _not_allowed("POST")
    job, refusal = await _owned(request, BatchJob, "batch", batch_id)
    if refusal:
        return refusal
    try:
        job = await sync_to_async(batch.cancel_job)(job)
    except BatchRefused as exc:
        return _refusal(exc)
    return JsonResponse(batch_wire.batch_object(job))
