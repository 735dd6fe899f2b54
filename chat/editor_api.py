"""The workflow editor's JSON API (``/studio/api/…``, mounted by ``studio_urls``): the
node types and what their configs may name, workflows (list, create, duplicate), a
definition's problems, versions (save, publish, roll back) and what changed between
two versions. The services are ``chat.workflows.versions``; runs and replays are
``chat.run_api``.

Session auth, as the studio: not signed in → 401, signed in without the permission →
403 (staff with ``chat.view_workflow`` read, ``chat.change_workflow`` save and publish,
``chat.add_workflow`` create; superusers pass). POSTs carry Django's CSRF token
(``X-CSRFToken``). Every error is ``{"error": {"code", "message", …}}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from modeltranslation.settings import AVAILABLE_LANGUAGES, DEFAULT_LANGUAGE
from modeltranslation.utils import build_localized_fieldname, get_language

from core.text import unstorable_at

from .models import Workflow, WorkflowVersion
from .studio import available_models
from .tools.models import Tool
from .workflows.registry import describe
from .workflows.registry import node_types as registered_node_types
from .workflows.validation import Problem
from .workflows.versions import (
    NOTE_MAX,
    InvalidDefinition,
    ensure_history,
    located_problems,
    save_version,
)
from .workflows.versions import diff as definition_diff
from .workflows.versions import publish as publish_version

READ, CHANGE, ADD = "chat.view_workflow", "chat.change_workflow", "chat.add_workflow"
STARTER = {"entry": "start", "nodes": [{"id": "start", "type": "llm", "config": {}}],
           "edges": []}
View = Callable[..., JsonResponse]


class ApiError(Exception):
    """A refusal: its status and ``{"error": {"code", "message", **extra}}``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.body = status, {"code": code, "message": message, **extra}

    def response(self) -> JsonResponse:
        return JsonResponse({"error": self.body}, status=self.status)


def may(user: Any, permission: str) -> bool:
    """Whether ``user`` holds ``permission`` here: superusers; staff with the model
    permission (changing implies reading, as in the admin)."""
    if not user.is_active or not (user.is_staff or user.is_superuser):
        return False
    if permission == READ:
        return user.has_perm(READ) or user.has_perm(CHANGE)
    return user.has_perm(permission)


def api(**permissions: str) -> Callable[[View], View]:
    """A view of this API; ``permissions`` maps each method it answers to the
    permission it needs (``GET=READ``)."""

    def decorate(view: View) -> View:
        @wraps(view)
        def answer(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            try:
                if not request.user.is_authenticated:
                    raise ApiError(401, "not_signed_in", _("Sign in first."))
                permission = permissions.get(request.method or "")
                if permission is None:
                    raise ApiError(405, "method_not_allowed", _("Method not allowed."))
                if not may(request.user, permission):
                    raise ApiError(403, "forbidden", _(
                        "You do not have permission to do this with workflows."))
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return exc.response()

        return answer

    return decorate


# --- input -----------------------------------------------------------------------------


def _body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object, or a 400 saying what is wrong with it."""
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "bad_json", _("The body is not valid JSON: %(error)s")
                       % {"error": exc}) from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", _("The body must be a JSON object."))
    if unstorable_at(data) is not None:
        raise ApiError(400, "bad_json", _("The body holds text that cannot be stored (NUL "
                                          "or an unpaired surrogate)."))
    return data


def _invalid(fields: dict[str, list[str]]) -> ApiError:
    return ApiError(400, "invalid", _("Some fields are not valid."), fields=fields)


def _text(data: dict[str, Any], key: str, *, required: bool = False,
          max_chars: int | None = None) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise _invalid({key: [_("Give a non-empty string.") if required
                              else _("Give a string.")]})
    if max_chars is not None and len(value) > max_chars:
        raise _invalid({key: [_("At most %(max)d characters.") % {"max": max_chars}]})
    return value


def _workflow(slug: str) -> Workflow:
    try:
        return Workflow.objects.get(slug=slug)
    except Workflow.DoesNotExist:
        raise ApiError(404, "workflow_not_found",
                       _("No workflow “%(slug)s”.") % {"slug": slug}) from None


def _version(workflow: Workflow, number: Any) -> WorkflowVersion:
    found = workflow.versions.select_related("author").filter(number=number).first() \
        if isinstance(number, int) and 0 < number < 2**31 else None  # else: no such row
    if found is None:
        raise ApiError(404, "version_not_found", _("Workflow “%(slug)s” has no version "
                                                   "%(number)s.")
                       % {"slug": workflow.slug, "number": number})
    return found


def _refused(exc: InvalidDefinition) -> ApiError:
    return ApiError(400, "invalid_definition",
                    _("The definition has problems; nothing was saved."),
                    problems=_problems(exc.problems))


def _problems(found: list[Problem]) -> list[dict[str, Any]]:
    return [{"node": problem.node, "message": problem.message} for problem in found]


# --- output ----------------------------------------------------------------------------


def _version_dict(version: WorkflowVersion, live: int | None, *,
                  full: bool = True) -> dict[str, Any]:
    shown = {"number": version.number, "note": version.note,
             "author": version.author.get_username() if version.author else None,
             "created_at": version.created_at.isoformat(),
             "published_at": version.published_at.isoformat() if version.published_at
             else None,
             "live": version.number == live}
    if full:
        shown |= {"definition": version.definition, "layout": version.layout}
    return shown


def _listed(workflow: Workflow, latest: int | None) -> dict[str, Any]:
    nodes = workflow.definition.get("nodes") if isinstance(workflow.definition, dict) \
        else None
    return {"slug": workflow.slug, "name": workflow.name or workflow.slug,
            "description": workflow.description, "enabled": workflow.enabled,
            "is_default": workflow.is_default, "live_version": workflow.live_version,
            "latest_version": latest, "nodes": len(nodes) if isinstance(nodes, list) else 0,
            "updated_at": workflow.updated_at.isoformat()}


def _tools() -> list[dict[str, str]]:
    """Every enabled tool an agent node may be given: who may call it is settled when
    the workflow runs (``chat.tools.service.usable``), not by who edits it."""
    found = Tool.objects.filter(enabled=True).filter(
        Q(server__isnull=True) | Q(server__enabled=True)).filter(
        Q(workflow__isnull=True) | Q(workflow__enabled=True)).order_by("name")
    return [{"name": tool.name, "description": tool.description or ""} for tool in found]


# --- views -----------------------------------------------------------------------------


@api(GET=READ)
def node_types(request: HttpRequest) -> JsonResponse:
    """The node types (label, description, config schema in the active language) and
    what their configs may name: tools, enabled workflows, chat models."""
    kinds = [describe(kind) for _name, kind in sorted(registered_node_types().items())]
    enabled = Workflow.objects.filter(enabled=True).order_by("slug")
    return JsonResponse({
        "node_types": kinds, "tools": _tools(),
        "workflows": [{"slug": w.slug, "name": w.name or w.slug} for w in enabled],
        "models": [model["name"] for model in available_models()]})


@api(GET=READ, POST=ADD)
def workflows(request: HttpRequest) -> JsonResponse:
    """GET: every workflow; POST ``{"slug", "name", "description"?, "from"?}``: a new
    workflow (``from``: a copy of that one's latest version)."""
    if request.method == "POST":
        return _create(request, _body(request))
    listed = []
    for row in Workflow.objects.annotate(latest=Max("versions__number")).order_by("slug"):
        if row.latest is None:  # made before versions: its definition is version 1
            ensure_history(row)
        listed.append(_listed(row, row.latest or row.live_version))
    return JsonResponse({"workflows": listed})


def _translated(workflow: Workflow, field: str, value: str) -> None:
    """``value`` in the active language, and in the default one while that is empty
    (the admin asks for it; other languages fall back to it)."""
    setattr(workflow, build_localized_fieldname(field, get_language()), value)
    default = build_localized_fieldname(field, DEFAULT_LANGUAGE)
    if not getattr(workflow, default, None):
        setattr(workflow, default, value)


def _create(request: HttpRequest, data: dict[str, Any]) -> JsonResponse:
    slug, name = _text(data, "slug", required=True), _text(data, "name", required=True)
    workflow = Workflow(slug=slug, definition=STARTER)
    layout: dict[str, Any] = {}
    note = _("Created")
    if data.get("from") is not None:
        source = _workflow(_text(data, "from", required=True))
        if not may(request.user, READ):
            raise ApiError(403, "forbidden", _("You may not read workflow “%(slug)s”.")
                           % {"slug": source.slug})
        ensure_history(source)
        copied = source.versions.first()  # the latest (ordering: -number)
        assert copied is not None  # ensure_history made one
        workflow.definition, layout = copied.definition, copied.layout
        workflow.default_model, workflow.double_texting = (source.default_model,
                                                           source.double_texting)
        for language in AVAILABLE_LANGUAGES:
            field = build_localized_fieldname("description", language)
            setattr(workflow, field, getattr(source, field))
        note = _("Copy of “%(slug)s” version %(number)d") % {"slug": source.slug,
                                                             "number": copied.number}
    _translated(workflow, "name", name)
    if "description" in data:
        _translated(workflow, "description", _text(data, "description"))
    try:
        workflow.full_clean()
        with transaction.atomic():
            workflow.save()
            ensure_history(workflow, author=request.user, note=note, layout=layout)
    except ValidationError as exc:
        raise _invalid(exc.message_dict) from None
    except IntegrityError:  # the same slug, created meanwhile
        raise _invalid({"slug": [_("A workflow with this slug already exists.")]}) from None
    return JsonResponse({"workflow": _listed(workflow, 1)}, status=201)


@api(POST=READ)
def validate_definition(request: HttpRequest) -> JsonResponse:
    """POST ``{"slug"?, "definition"}``: the definition's problems, each with its node,
    as the admin finds them for that workflow (``slug``: a sub-workflow naming it
    includes itself)."""
    data = _body(request)
    target = None
    if data.get("slug") is not None:
        slug = _text(data, "slug", required=True)
        target = Workflow.objects.filter(slug=slug).first() or Workflow(slug=slug)
    found = located_problems(data.get("definition"), target)
    return JsonResponse({"problems": _problems(found)})


@api(GET=READ)
def workflow(request: HttpRequest, slug: str) -> JsonResponse:
    """The workflow and its latest version (draft or published), to open on the
    canvas."""
    found = _workflow(slug)
    ensure_history(found)
    latest = found.versions.select_related("author").first()
    assert latest is not None  # ensure_history made one
    return JsonResponse({
        "workflow": {"slug": found.slug, "name": found.name or found.slug,
                     "description": found.description, "enabled": found.enabled,
                     "live_version": found.live_version,
                     "can_change": may(request.user, CHANGE)},
        "version": _version_dict(latest, found.live_version)})


@api(GET=READ, POST=CHANGE)
def versions(request: HttpRequest, slug: str) -> JsonResponse:
    """GET: the versions, newest first; POST ``{"definition", "layout", "note"?,
    "publish"?}``: save the next version (published when ``publish``)."""
    found = _workflow(slug)
    if request.method == "POST":
        return _save(request, found, _body(request))
    ensure_history(found)
    rows = found.versions.select_related("author").order_by("-number")
    return JsonResponse({"versions": [_version_dict(v, found.live_version, full=False)
                                      for v in rows]})


def _save(request: HttpRequest, found: Workflow, data: dict[str, Any]) -> JsonResponse:
    note = _text(data, "note", max_chars=NOTE_MAX)
    publish = data.get("publish", False)
    if not isinstance(publish, bool):
        raise _invalid({"publish": [_("Give true or false.")]})
    if "definition" not in data:
        raise _invalid({"definition": [_("Give the definition to save.")]})
    try:
        saved = save_version(found, data["definition"], layout=data.get("layout"),
                             author=request.user, note=note, publish=publish)
    except InvalidDefinition as exc:
        raise _refused(exc) from None
    except ValidationError as exc:
        raise _invalid(exc.message_dict) from None
    return JsonResponse({"version": _version_dict(saved, found.live_version)}, status=201)


@api(GET=READ)
def version(request: HttpRequest, slug: str, number: int) -> JsonResponse:
    found = _workflow(slug)
    ensure_history(found)
    return JsonResponse({"version": _version_dict(_version(found, number),
                                                  found.live_version)})


@api(POST=CHANGE)
def publish(request: HttpRequest, slug: str, number: int) -> JsonResponse:
    """Publish version ``number``: the latest draft in place, an older one as a new
    version (a roll back)."""
    found = _workflow(slug)
    ensure_history(found)
    _version(found, number)
    try:
        published = publish_version(found, number, author=request.user)
    except InvalidDefinition as exc:
        raise _refused(exc) from None
    return JsonResponse({"version": _version_dict(published, found.live_version)})


@api(GET=READ)
def diff(request: HttpRequest, slug: str) -> JsonResponse:
    """``?a=N&b=M``: what changed from version N to version M (``a`` left out: the live
    version; ``b``: the latest)."""
    found = _workflow(slug)
    ensure_history(found)
    numbers = {}
    for side, default in (("a", found.live_version),
                          ("b", found.versions.aggregate(last=Max("number"))["last"])):
        raw = request.GET.get(side)
        if raw is not None and not (raw.isascii() and raw.isdigit() and len(raw) < 10):
            raise _invalid({side: [_("Give a version number.")]})
        numbers[side] = int(raw) if raw is not None else default
    a, b = _version(found, numbers["a"]), _version(found, numbers["b"])
    return JsonResponse({"a": a.number, "b": b.number,
                         **definition_diff(a.definition, b.definition)})
