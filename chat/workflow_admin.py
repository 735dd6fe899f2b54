"""Admin of workflows (definition validated on save, LangGraph's Mermaid drawing on the
change page), their waiting runs (approve or reject from the list) and schedules."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from modeltranslation.admin import TranslationAdmin

from routing.keys import KeyRefused

from .graph import checkpointer
from .graph.service import arun_resume
from .models import RunStatus, Workflow, WorkflowRun, WorkflowSchedule
from .run_admission import admit_run
from .workflows.compiler import WorkflowError, workflow_mermaid
from .workflows.registry import node_types

if TYPE_CHECKING:  # django-stubs' alias, for type checking only (a dev dependency)
    from django_stubs_ext import StrOrPromise

CONTENT_PERMISSION = "chat.view_message_content"


@admin.register(Workflow)
class WorkflowAdmin(TranslationAdmin):
    list_display = ("slug", "name", "is_default", "enabled", "double_texting", "version",
                    "updated_at")
    list_filter = ("enabled", "is_default", "double_texting")
    search_fields = ("slug", "name")
    filter_horizontal = ("api_keys",)
    readonly_fields = ("version", "node_type_list", "mermaid", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("slug", "name", "description", "enabled", "is_default",
                           "default_model", "double_texting", "api_keys", "version")}),
        (_("Graph"), {"fields": ("definition", "node_type_list", "mermaid")}),
        (_("Times"), {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description=_("node types"))
    def node_type_list(self, obj: Workflow | None) -> str:
        return format_html("<ul>{}</ul>", format_html_join(
            "", "<li><code>{}</code> — {}</li>",
            ((name, kind.description) for name, kind in sorted(node_types().items()))))

    @admin.display(description=_("drawing (Mermaid)"))
    def mermaid(self, obj: Workflow | None) -> StrOrPromise:
        if obj is None or obj.pk is None:
            return _("Shown once the workflow is saved.")
        try:
            text = workflow_mermaid(obj)
        except (WorkflowError, KeyError, ValueError) as exc:
            return _("Cannot be drawn: %(error)s") % {"error": exc}
        return format_html('<pre class="mermaid" style="white-space: pre">{}</pre>', text)


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
