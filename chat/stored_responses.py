"""Responses API answers kept for ``previous_response_id``, retrieve, delete and
``input_items`` (``StoredResponse``): the response object and its input items as
encrypted JSON, owned by the API-key family that made them; another key sees none."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from core.text import object_id

from .models import StoredResponse

MAX_CHAIN = 200  # responses followed back through previous_response_id
MAX_ID_CHARS = 64  # StoredResponse.id's


@dataclass(frozen=True)
class Turn:
    """One stored response of a chain: what was sent and what came back."""

    input_items: list[dict[str, Any]]
    output: list[dict[str, Any]]


def save(owner: str, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
    with transaction.atomic():
        StoredResponse.objects.create(
            id=response["id"], owner=owner, model=response["model"][:200],
            previous=response.get("previous_response_id") or "",
            response=json.dumps(response, ensure_ascii=False),
            input_items=json.dumps(input_items, ensure_ascii=False))


def load(owner: str, response_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """(the response object, its input items), or None when this owner has none."""
    if object_id(response_id, MAX_ID_CHARS) is None:
        return None  # no response has such an id
    row = StoredResponse.objects.filter(pk=response_id, owner=owner).first()
    if row is None:
        return None
    return json.loads(row.response), json.loads(row.input_items)


def delete(owner: str, response_id: str) -> bool:
    if object_id(response_id, MAX_ID_CHARS) is None:
        return False
    deleted, _by_model = StoredResponse.objects.filter(pk=response_id, owner=owner).delete()
    return bool(deleted)


def chain(owner: str, response_id: str) -> list[Turn] | None:
    """The turns up to ``response_id``, oldest first; None when it is not this owner's."""
    if object_id(response_id, MAX_ID_CHARS) is None:
        return None
    turns: list[Turn] = []
    current: str | None = response_id
    while current is not None and len(turns) < MAX_CHAIN:
        row = StoredResponse.objects.filter(pk=current, owner=owner).first()
        if row is None:
            return None if not turns else turns[::-1]  # an older link may have been deleted
        response = json.loads(row.response)
        turns.append(Turn(json.loads(row.input_items), response.get("output") or []))
        current = row.previous or None
    return turns[::-1]
