"""The visual workflow editor's page: ``/studio/workflows/`` (the list) and
``/studio/workflows/<slug>/`` (one workflow on the canvas). The page is a shell: the
bundle built from editor/ (chat/static/studio/dist/) draws it and talks to the JSON API
(``chat.editor_api``, ``chat.run_api``) at the urls the config names.

The config (``<script id="editor-config" type="application/json">``)::

    {"slug": null | "<slug>", "language": "en" | "zh-hans", "csrf": "<token>",
     "urls": {<url name>: "<url>"}, "ws": "/ws/chat/", "can_change", "can_add",
     "models": [{"name", "label"}], "default_model": "<name>"}

``urls`` are keyed by their names in chat/studio_urls.py (the editor's ``url(config,
name, params)`` in editor/src/api.js fills them in); the urls of one workflow, version
or conversation are templates holding ``{slug}``, ``{number}`` or ``{id}``. Besides
them: ``studio`` (the chat page) and ``admin`` (the workflows in the admin).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import reverse
from django.utils import translation
from django.views.decorators.http import require_GET

from .editor_api import ADD, CHANGE, READ, may
from .models import Workflow
from .studio import available_models, default_model

# Stand-ins reversed into the urls, then replaced by the placeholders the page fills in.
_SLUG, _NUMBER, _ID = "zzslugzz", 987654321, "zzidzz"
_PLACEHOLDERS = {_SLUG: "{slug}", str(_NUMBER): "{number}", _ID: "{id}"}
_URL_NAMES: dict[str, tuple[Any, ...]] = {
    "workflows": (),
    "workflow-editor": (_SLUG,),
    "node-types": (),
    "workflows-api": (),
    "workflow-validate": (),
    "workflow-api": (_SLUG,),
    "workflow-versions": (_SLUG,),
    "workflow-version": (_SLUG, _NUMBER),
    "workflow-publish": (_SLUG, _NUMBER),
    "workflow-diff": (_SLUG,),
    "workflow-runs": (_SLUG,),
    "conversations": (),
    "conversation": (_ID,),
    "steps": (_ID,),
    "replay": (_ID,),
    "tools": (),
}


def _template(name: str, args: tuple[Any, ...]) -> str:
    url = reverse(f"studio:{name}", args=args)
    for stand_in, placeholder in _PLACEHOLDERS.items():
        url = url.replace(stand_in, placeholder)
    return url


def editor_urls() -> dict[str, str]:
    """Every url the editor's page calls, by url name (templates for one object)."""
    urls = {name: _template(name, args) for name, args in _URL_NAMES.items()}
    urls["studio"] = reverse("studio:page")
    urls["admin"] = reverse("admin:chat_workflow_changelist")
    return urls


def editor_config(request: HttpRequest, slug: str | None) -> dict[str, Any]:
    models = available_models()
    return {
        "slug": slug,
        "language": translation.get_language(),
        "csrf": get_token(request),
        "urls": editor_urls(),
        "ws": "/ws/chat/",
        "can_change": may(request.user, CHANGE),
        "can_add": may(request.user, ADD),
        "models": [{"name": m["name"], "label": m["label"]} for m in models],
        "default_model": default_model(models),
    }


@require_GET
def page(request: HttpRequest, slug: str | None = None) -> HttpResponse:
    """The list (no ``slug``) or one workflow's editor. Signed out: to the studio's
    sign-in, back here after; without ``chat.view_workflow`` (staff, as the API asks):
    403; no such slug: 404."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path(), reverse("studio:login"))
    if not may(request.user, READ):
        return render(request, "studio/workflows.html", {"refused": True}, status=403)
    if slug is not None and not Workflow.objects.filter(slug=slug).exists():
        raise Http404
    return render(request, "studio/workflows.html",
                  {"config": editor_config(request, slug), "refused": False})
