"""Admin of conversations and memory. Message content is decrypted on screen only for
staff with the ``chat.view_message_content`` permission; conversations export to and
import from the seed's session JSON; everyone on the staff sees and deletes their own
memories (superusers everyone's)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, cast

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _

from core.fields import EncryptedTextField

from . import curated, workflow_admin  # noqa: F401  (workflow_admin: workflows, runs, schedules)
from .conversations import (
    ConversationError,
    export_session,
    import_session,
    matching_titles,
)
from .models import Conversation, MemoryItem, Message, QAPair
from .tools import admin as tool_admin  # noqa: F401  (tools)
from .tools import mcp_admin  # noqa: F401  (MCP servers)

if TYPE_CHECKING:  # django-stubs' alias, for type checking only (a dev dependency)
    from django_stubs_ext import StrOrPromise

CONTENT_PERMISSION = "chat.view_message_content"
HIDDEN = _("(encrypted: needs the “Can read decrypted message content” permission)")


def may_read_content(request) -> bool:
    return request.user.has_perm(CONTENT_PERMISSION)


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    can_delete = False
    fields = ["turn", "role", "shown_content", "model", "prompt_tokens", "completion_tokens",
              "latency_ms", "in_context", "created_at"]
    readonly_fields = cast(list[str], fields)  # flat: no field groups

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def get_formset(self, request, obj=None, **kwargs):
        self.reader = may_read_content(request)  # what shown_content may show
        return super().get_formset(request, obj, **kwargs)

    @admin.display(description=_("content"))
    def shown_content(self, message: Message) -> StrOrPromise:
        return message.content if getattr(self, "reader", False) else HIDDEN


class ImportForm(forms.Form):
    file = forms.FileField(label=_("session JSON file"))
    new_id = forms.BooleanField(
        label=_("import as a new conversation"), required=False,
        help_text=_("Give it a new id instead of the file's session_id."))

    def session(self):
        try:
            return json.loads(self.cleaned_data["file"].read())
        except (ValueError, UnicodeDecodeError):
            raise forms.ValidationError(_("The file is not valid JSON.")) from None


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["title_or_id", "user", "model", "turns", "prompt_tokens",
                    "completion_tokens", "updated_at"]
    list_filter = ["model"]
    search_fields = ["id", "user"]  # and the title, decrypted: get_search_results
    readonly_fields = ["id", "owner", "user", "model", "turns", "prompt_tokens",
                       "completion_tokens", "created_at", "updated_at"]
    fields = ["id", "title", *readonly_fields[1:]]
    formfield_overrides = {EncryptedTextField: {"widget": forms.TextInput(
        attrs={"class": "vTextField"})}}
    inlines = [MessageInline]
    actions = ["export_sessions"]

    @admin.display(description=_("title"))
    def title_or_id(self, conversation: Conversation) -> str:
        return conversation.title or str(conversation.pk)

    def get_search_results(self, request, queryset, search_term):
        """Titles are encrypted at rest: matched in Python, besides the id and user."""
        found, duplicates = super().get_search_results(request, queryset, search_term)
        if search_term.strip():
            found = found | queryset.filter(pk__in=matching_titles(queryset, search_term))
        return found, duplicates

    def has_add_permission(self, request) -> bool:  # conversations start in a chat, or import
        return request.user.has_perm("chat.add_conversation")

    def add_view(self, request, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:chat_conversation_import"))

    @admin.action(description=_("Export as session JSON"), permissions=["view"])
    def export_sessions(self, request, queryset):
        if not may_read_content(request):  # an export is the decrypted content
            raise PermissionDenied(HIDDEN)
        sessions = [export_session(c) for c in queryset]
        body = sessions[0] if len(sessions) == 1 else sessions
        name = f"session-{sessions[0]['session_id']}.json" if len(sessions) == 1 \
            else "sessions.json"
        response = HttpResponse(json.dumps(body, ensure_ascii=False, indent=2),
                                content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    def get_urls(self):
        view = self.admin_site.admin_view(self.import_view)
        return [path("import/", view, name="chat_conversation_import"), *super().get_urls()]

    def import_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                conversation = import_session(form.session(), request.user.get_username(),
                                              new_id=form.cleaned_data["new_id"])
            except (forms.ValidationError, ConversationError) as exc:
                form.add_error("file", getattr(exc, "message", exc))
            else:
                messages.success(request, _("Imported conversation “%(name)s”.")
                                 % {"name": conversation})
                return HttpResponseRedirect(
                    reverse("admin:chat_conversation_change", args=[conversation.pk]))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "title": _("Import a conversation"), "form": form}
        return TemplateResponse(request, "admin/chat/conversation/import.html", context)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Read-only: messages are written by conversations."""

    list_display = ["conversation", "turn", "role", "model", "completion_tokens", "created_at"]
    list_filter = ["role"]
    search_fields = ["conversation__id", "conversation__user"]

    def get_fields(self, request, obj=None):
        content = "content" if may_read_content(request) else "hidden_content"
        return ["conversation", "turn", "role", content, "content_format", "model",
                "prompt_tokens", "completion_tokens", "latency_ms", "in_context", "created_at"]

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description=_("content"))
    def hidden_content(self, message: Message) -> StrOrPromise:
        return HIDDEN


@admin.register(MemoryItem)
class MemoryItemAdmin(admin.ModelAdmin):
    """Each member of the staff sees and deletes their own memories; superusers all."""

    list_display = ["text", "user", "conversation", "created_at"]
    fields = ["text", "user", "owner", "conversation", "source", "created_at"]
    readonly_fields = cast(list[str], fields)  # flat: no field groups
    search_fields = ["user"]

    def get_queryset(self, request):
        queryset = super().get_queryset(request).select_related("conversation")
        return queryset if request.user.is_superuser else queryset.filter(owner=request.user)

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None) -> bool:
        return self._own(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self._own(request, obj)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @staticmethod
    def _own(request, obj) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        return user.is_superuser or obj is None or obj.owner_id == user.pk


@admin.register(QAPair)
class QAPairAdmin(admin.ModelAdmin):
    list_display = ("question", "threshold", "enabled", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("question", "answer")
    fields = ("question", "answer", "threshold", "enabled")

    def save_model(self, request, obj, form, change) -> None:
        """Saving embeds the question (the offline MiniLM), so matching sees it at once."""
        curated.save_pair(obj)
