"""Admission (``routing.admission``) of the runs no request carries — a scheduled
workflow run, a resume decided in the admin — for whoever the run is attributed to:
the conversation's user (their studio quota) or, for a conversation of an API key
without an owner (``key:<prefix>``), that key (its validity, scope and limits)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from routing.admission import Ticket, admit_sync
from routing.key_models import ApiKey
from routing.rules import estimate_tokens

KEY_IDENTITY = "key:"  # chat.conversations.key_identity of a key without an owner


def admit_run(identity: str, content: Any = None, *, model: str | None = None,
              workflow: str | None = None, own_model: str | None = None) -> Ticket | None:
    """Admit one run attributed to ``identity`` (``KeyRefused`` refuses it); None when
    nobody it could be counted against exists any more."""
    tokens = estimate_tokens([{"role": "user", "content": content}]) if content else 0
    if identity.startswith(KEY_IDENTITY):
        key = ApiKey.objects.filter(prefix=identity[len(KEY_IDENTITY):]).first()
        if key is None:
            return None
        return admit_sync(key=key, model=model, workflow=workflow, own_model=own_model,
                          tokens=tokens)
    users = get_user_model()
    user = users.objects.filter(**{users.USERNAME_FIELD: identity}).first()
    return admit_sync(user=user, tokens=tokens) if user is not None else None
