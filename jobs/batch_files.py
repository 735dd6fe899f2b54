"""Batch input: uploaded files (OpenAI's ``file`` objects, bytes kept in the database)
and the checking of their lines before a job runs them (``jobs.batch``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings
from django.utils.translation import gettext as _

from chat.v1.wire import InvalidBody, parse_chat_body

from .models import BatchFile, FilePurpose


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
        problem: tuple[str, str | None] | None = _line_problem(item, custom_id, seen, endpoint)
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
        custom_id = cast(str, custom_id)  # _line_problem found it a non-empty string
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
