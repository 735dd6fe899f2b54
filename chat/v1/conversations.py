"""Export and import of conversations over HTTP, beside the ``/v1`` API and with its
API keys: ``GET /v1/conversations/<id>/export`` answers the seed's session JSON,
``POST /v1/conversations/import`` (``?new_id=true`` for a fresh id) stores one.
A key sees only its holder's conversations; errors are in OpenAI's shape."""

from __future__ import annotations

import json
import uuid

from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from core.client_ip import request_client_ip
from routing.admission import authenticate
from routing.keys import KeyRefused

from ..conversations import ConversationError, export_session, import_session, key_identity
from ..models import Conversation
from .auth import bearer
from .wire import error_response

STATUS = {"conversation_not_found": 404, "conversation_exists": 409}


def _error(status: int, message: str, code: str | None) -> JsonResponse:
    return error_response(status, message, code)


def _caller(request: HttpRequest) -> str:
    """The identity of the API key the request presents, or ``KeyRefused``."""
    return key_identity(authenticate(bearer(request), request_client_ip(request)))


@csrf_exempt  # API-key authentication only, no cookies
@require_GET
def export_conversation(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    try:
        user = _caller(request)
    except KeyRefused as exc:
        return _error(exc.status, exc.message, exc.code)
    conversation = Conversation.objects.filter(pk=conversation_id, user=user).first()
    if conversation is None:
        return _error(404, _("No conversation “%(id)s” for this key.") % {"id": conversation_id},
                      "conversation_not_found")
    return JsonResponse(export_session(conversation), json_dumps_params={"ensure_ascii": False})


@csrf_exempt  # API-key authentication only, no cookies
@require_POST
def import_conversation(request: HttpRequest) -> JsonResponse:
    try:
        user = _caller(request)
    except KeyRefused as exc:
        return _error(exc.status, exc.message, exc.code)
    try:
        data = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError):
        return _error(400, _("The request body is not valid JSON."), "invalid_json")
    new_id = request.GET.get("new_id", "").lower() in {"1", "true", "yes"}
    try:
        conversation = import_session(data, user, new_id=new_id)
    except ConversationError as exc:
        return _error(STATUS.get(exc.code, 400), exc.message, exc.code)
    return JsonResponse({"id": str(conversation.pk), "object": "conversation",
                         "messages": conversation.messages.count()}, status=201)
