"""Admin of workflows (definition validated on save and recorded as a published
version, the graph drawn on the change page, a link to the workflow editor), their
waiting runs (approve or reject from the list) and schedules."""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import conditional_escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _
from modeltranslation.admin import TranslationAdmin

from routing.keys import KeyRefused

from .graph import checkpointer
from .graph.service import arun_resume
from .models import RunStatus, Workflow, WorkflowRun, WorkflowSchedule
from .run_admission import admit_run
from .workflows import drawing as workflow_drawing
from .workflows.registry import node_types
from .workflows.versions import record_admin_save

if TYPE_CHECKING:  # django-stubs' alias, for type checking only (a dev dependency)
    from django_stubs_ext import StrOrPromise

CONTENT_PERMISSION = "chat.view_message_content"
CODE = re.compile(r"``(.+?)``|`([^`]+)`")


def with_code(text: Any) -> SafeString:
    """``text`` escaped, its ``names`` (reStructuredText's double backquotes, or single
    ones) as ``<code>``: a node type's description as the admin shows it."""
    escaped = str(conditional_escape(str(text)))
    # Safe: only our own <code> tags are added to text escaped just above.
    return mark_safe(CODE.sub(
        lambda match: f"<code>{match.group(1) or match.group(2)}</code>", escaped))


@admin.register(Workflow)
class WorkflowAdmin(TranslationAdmin):
    change_form_template = "admin/chat/workflow/change_form.html"
    change_list_template = "admin/chat/workflow/change_list.html"
    list_display = ("slug", "name", "is_default", "enabled", "double_texting",
                    "live_version", "updated_at")
    list_filter = ("enabled", "is_default", "double_texting")
    search_fields = ("slug", "name")
    filter_horizontal = ("api_keys",)
    readonly_fields = ("published_version", "drawing", "node_type_list", "created_at",
                       "updated_at")
    fieldsets = (
        (None, {"fields": ("slug", "name", "description", "enabled", "is_default",
                           "default_model", "double_texting", "api_keys",
                           "published_version")}),
        (_("Graph"), {"fields": ("drawing", "definition", "node_type_list")}),
        (_("Times"), {"fields": ("created_at", "updated_at")}),
    )

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        """Help texts shown as text: Django's admin writes them out as HTML, which
        would swallow the “<slug>” of “workflow/<slug>”."""
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if formfield is not None and formfield.help_text:
            formfield.help_text = conditional_escape(formfield.help_text)
        return formfield

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # The saved slug (the form's may be invalid after a refused save).
        slug = Workflow.objects.filter(pk=object_id).values_list("slug", flat=True).first() \
            if str(object_id).isdigit() else None
        context = {**(extra_context or {}),
                   "editor_url": reverse("studio:workflow-editor", args=[slug])
                   if slug else None}
        return super().change_view(request, object_id, form_url, context)

    def changelist_view(self, request, extra_context=None):
        context = {**(extra_context or {}), "editor_url": reverse("studio:workflows")}
        return super().changelist_view(request, context)

    def save_model(self, request, obj: Workflow, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        record_admin_save(obj, request.user)  # a new version only if the graph changed

    @admin.display(description=_("published version"))
    def published_version(self, obj: Workflow | None) -> StrOrPromise:
        if obj is None or obj.live_version is None:
            return _("none yet (recorded on the next save)")
        return str(obj.live_version)

    @admin.display(description=_("node types"))
    def node_type_list(self, obj: Workflow | None) -> str:
        return format_html('<dl class="workflow-node-types">{}</dl>', format_html_join(
            "", "<dt><strong>{}</strong> <code>{}</code></dt><dd>{}</dd>",
            ((kind.label, name, with_code(kind.description))
             for name, kind in sorted(node_types().items()))))

    @admin.display(description=_("drawing"))
    def drawing(self, obj: Workflow | None) -> StrOrPromise:
        if obj is None or obj.pk is None:
            return _("Shown once the workflow is saved.")
        title = _("Drawing of workflow “%(name)s”") % {"name": obj}
        return workflow_drawing.svg(obj.definition, title=str(title))


def _resume(run: WorkflowRun, decision: dict) -> dict:
    """Resume a waiting run from the admin's (synchronous) request, admitted for the
    conversation's user (their quota pays for the rest of the run)."""
    try:
        ticket = admit_run(run.conversation.user, decision.get("content"))
    except KeyRefused as exc:
        return {"type": "error", "code": exc.code, "message": exc.message}

    async def resume() -> dict:
        opened_here = asyncio.get_running_loop() not in checkpointer._savers
        try:
            return await arun_resume(conversation_id=str(run.conversation_id),
                                     user=run.conversation.user, resume=decision)
        finally:
            if opened_here:  # this loop ends with the call: close the pool it opened
                await checkpointer.close_saver()

    last = async_to_sync(resume)()
    if ticket is not None:
        ticket.settle(int((last.get("usage") or {}).get("total_tokens") or 0))
    return last


@admin.register(WorkflowRun)
class WorkflowRunAdmin(admin.ModelAdmin):
    list_display = ("id", "conversation", "workflow", "user", "status", "node", "updated_at")
    list_filter = ("status", "workflow")
    search_fields = ("user", "conversation__id")
    fields = ("conversation", "workflow", "user", "status", "node", "error", "created_at",
              "updated_at")
    actions = ("approve", "reject")

    def has_add_permission(self, request) -> bool:
        return False

    def get_fields(self, request, obj=None):
        return (*self.fields, self._interrupt_field(request))

    def get_readonly_fields(self, request, obj=None):
        return (*self.fields, self._interrupt_field(request))

    @staticmethod
    def _interrupt_field(request) -> str:
        return ("shown_interrupt" if request.user.has_perm(CONTENT_PERMISSION)
                else "hidden_interrupt")

    @admin.display(description=_("interrupt"))
    def shown_interrupt(self, obj: WorkflowRun) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.interrupt_value, indent=2,
                                                        ensure_ascii=False))

    @admin.display(description=_("interrupt"))
    def hidden_interrupt(self, obj: WorkflowRun) -> StrOrPromise:
        return _("(encrypted: needs the “Can read decrypted message content” permission)")

    def _decide(self, request, queryset, decision: dict) -> None:
        for run in queryset.filter(status=RunStatus.WAITING).select_related("conversation"):
            last = _resume(run, decision)
            level = messages.SUCCESS if last.get("type") in ("done", "waiting") \
                else messages.WARNING
            self.message_user(request, _("Run %(id)s: %(outcome)s") % {
                "id": run.pk, "outcome": last.get("type") if last.get("type") != "error"
                else last.get("code")}, level)

    @admin.action(description=_("Approve the selected waiting runs"),
                  permissions=["change"])
    def approve(self, request, queryset) -> None:
        self._decide(request, queryset, {"action": "approve"})

    @admin.action(description=_("Reject the selected waiting runs"), permissions=["change"])
    def reject(self, request, queryset) -> None:
        self._decide(request, queryset, {"action": "reject",
                                         "reason": str(_("Rejected in the admin."))})


@admin.register(WorkflowSchedule)
class WorkflowScheduleAdmin(admin.ModelAdmin):
    list_display = ("name", "workflow", "cron", "every_seconds", "enabled", "next_run_at",
                    "last_run_at", "last_status")
    list_filter = ("enabled", "workflow")
    readonly_fields = ("next_run_at", "last_run_at", "last_status", "last_conversation",
                       "last_error")
