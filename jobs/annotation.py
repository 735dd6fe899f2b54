"""Annotation of assistant replies: a rating (thumbs up / down), a corrected version
and free tags, kept with the annotator and the time. The studio calls these through
``jobs.annotation_api``; datasets (``jobs.datasets``) read them back.

Who may annotate a reply: the owner of its conversation, and staff with
``jobs.add_annotation`` and ``chat.view_message_content`` (they judge what they read;
``jobs.permissions``). Who sees an annotation: its annotator, and staff with
``jobs.view_annotation`` (its correction only with the content permission as well).
Curated answers (question/answer pairs that answer a turn directly) are the
conversations' own: ``chat.curated``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils.translation import gettext as _

from chat.models import Message, Role

from .models import Annotation, Rating
from .permissions import ADD_ANNOTATIONS, READ_CONTENT, VIEW_ANNOTATIONS, staff_with

MAX_TAGS = 20
MAX_TAG_LENGTH = 50
MAX_CORRECTION_CHARS = 100_000


class AnnotationRefused(Exception):
    """Bad input or no permission; ``status`` is the HTTP status an API answers with."""

    def __init__(self, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.message, self.status, self.field = message, status, field


@dataclass(frozen=True)
class AnnotationInput:
    """What an annotator sends; ``None`` leaves that part as it was."""

    rating: str | None = None
    corrected_content: str | None = None
    tags: list[str] | None = None


def can_annotate(user, message: Message) -> bool:
    """Everyone the replies of their own conversations; staff with the permissions to
    annotate and to read the content any reply."""
    if not user or not user.is_authenticated:
        return False
    conversation = message.conversation
    return bool(conversation.owner_id == user.pk
                or (conversation.owner_id is None and conversation.user == user.get_username())
                or staff_with(user, ADD_ANNOTATIONS, READ_CONTENT))


def clean_input(data: dict[str, Any]) -> AnnotationInput:
    """Check a JSON body (``rating``, ``corrected_content``, ``tags``); unknown keys are
    refused so a typo is not silently ignored."""
    if not isinstance(data, dict):
        raise AnnotationRefused(_("The body must be a JSON object."))
    unknown = sorted(set(data) - {"rating", "corrected_content", "tags"})
    if unknown:
        raise AnnotationRefused(_("Unknown field “%(field)s” (allowed: rating, "
                                  "corrected_content, tags).") % {"field": unknown[0]},
                                field=unknown[0])
    rating = data.get("rating")
    if rating is not None and rating not in Rating.values:
        raise AnnotationRefused(_("“rating” must be one of: %(allowed)s.")
                                % {"allowed": ", ".join(Rating.values)}, field="rating")
    corrected = data.get("corrected_content")
    if corrected is not None and not isinstance(corrected, str):
        raise AnnotationRefused(_("“corrected_content” must be a string."),
                                field="corrected_content")
    if corrected is not None and len(corrected) > MAX_CORRECTION_CHARS:
        raise AnnotationRefused(_("“corrected_content” is longer than %(n)d characters.")
                                % {"n": MAX_CORRECTION_CHARS}, field="corrected_content")
    tags = data.get("tags")
    return AnnotationInput(rating, corrected, None if tags is None else clean_tags(tags))


def clean_tags(tags: Any) -> list[str]:
    """Stripped, de-duplicated (first spelling kept) tags; empty ones dropped."""
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise AnnotationRefused(_("“tags” must be a list of strings."), field="tags")
    cleaned: list[str] = []
    for tag in (t.strip() for t in tags):
        if len(tag) > MAX_TAG_LENGTH:
            raise AnnotationRefused(_("A tag is longer than %(n)d characters: “%(tag)s”.")
                                    % {"n": MAX_TAG_LENGTH, "tag": tag[:60]}, field="tags")
        if tag and tag.lower() not in {c.lower() for c in cleaned}:
            cleaned.append(tag)
    if len(cleaned) > MAX_TAGS:
        raise AnnotationRefused(_("At most %(n)d tags.") % {"n": MAX_TAGS}, field="tags")
    return cleaned


def annotate(user, message_id: int, data: AnnotationInput) -> Annotation:
    """Create or update ``user``'s annotation of an assistant reply."""
    message = (Message.objects.select_related("conversation")
               .filter(pk=message_id).first())
    if message is None or not can_annotate(user, message):
        # the same answer for "missing" and "not yours": ids are not probed
        raise AnnotationRefused(_("No such message."), status=404)
    if message.role != Role.ASSISTANT:
        raise AnnotationRefused(_("Only assistant replies can be annotated."))
    with transaction.atomic():
        annotation, _created = Annotation.objects.select_for_update().get_or_create(
            message=message, annotator=user)
        if data.rating is not None:
            annotation.rating = data.rating
        if data.corrected_content is not None:
            # a correction identical to the reply is no correction
            text = data.corrected_content
            annotation.corrected_content = "" if text.strip() == str(message.value).strip() \
                else text
        if data.tags is not None:
            annotation.tags = data.tags
        annotation.save()
    return annotation


def annotations_for(user, *, conversation_id: str | None = None, rating: str | None = None,
                    tag: str | None = None, model: str | None = None,
                    since: datetime | None = None,
                    until: datetime | None = None) -> QuerySet[Annotation]:
    """The annotations ``user`` may see (all with ``jobs.view_annotation``, else their
    own), filtered."""
    queryset = Annotation.objects.select_related("message", "annotator")
    if not staff_with(user, VIEW_ANNOTATIONS):
        queryset = queryset.filter(annotator=user)
    if conversation_id:
        queryset = queryset.filter(message__conversation_id=conversation_id)
    if rating:
        if rating not in Rating.values:
            raise AnnotationRefused(_("“rating” must be one of: %(allowed)s.")
                                    % {"allowed": ", ".join(Rating.values)}, field="rating")
        queryset = queryset.filter(rating=rating)
    if tag:
        queryset = queryset.filter(tags__contains=[tag])
    if model:
        queryset = queryset.filter(message__model=model)
    if since:
        queryset = queryset.filter(updated_at__gte=since)
    if until:
        queryset = queryset.filter(updated_at__lt=until)
    return queryset


def annotation_dict(annotation: Annotation, reader=None) -> dict[str, Any]:
    """The JSON the studio reads; another annotator's correction only for a ``reader``
    who may read message content (none given: the annotator's own answer)."""
    message = annotation.message
    shown = reader is None or annotation.annotator_id == reader.pk \
        or reader.has_perm(READ_CONTENT)
    return {
        "id": annotation.pk,
        "message_id": annotation.message_id,
        "conversation_id": str(message.conversation_id),
        "turn": message.turn,
        "model": message.model,
        "rating": annotation.rating,
        "corrected_content": annotation.corrected_content if shown else None,
        "tags": annotation.tags,
        "annotator": annotation.annotator.get_username() if annotation.annotator else None,
        "created_at": annotation.created_at.isoformat(),
        "updated_at": annotation.updated_at.isoformat(),
    }
