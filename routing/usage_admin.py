"""Admin for usage records and audit events: read-only lists with filters, and a
summary of usage per key, model and day."""

from __future__ import annotations

from datetime import date, timedelta

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.utils.translation import gettext_lazy as _

from .usage import usage_summary
from .usage_models import AuditEvent, UsageRecord


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by workers: nobody adds, edits or deletes them by hand."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "key_prefix", "user", "endpoint", "model", "instance",
                    "tokens_in", "tokens_out", "latency_ms", "ttft_ms", "status")
    list_filter = ("endpoint", "status", "model", "created_at")
    search_fields = ("key_prefix", "user", "model", "request_id")
    date_hierarchy = "created_at"
    change_list_template = "admin/routing/usagerecord/change_list.html"

    def get_urls(self):
        return [path("summary/", self.admin_site.admin_view(self.summary_view),
                     name="routing_usagerecord_summary"), *super().get_urls()]

    def summary_view(self, request):
        """Usage per key, model and day; ``?since=&until=`` (default the last 7 days),
        ``key`` and ``model`` narrow it. Needs ``routing.view_usagerecord``, as the list."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        today = timezone.now().date()
        since = _date(request.GET.get("since")) or today - timedelta(days=6)
        until = _date(request.GET.get("until")) or today
        rows = usage_summary(since, until, request.GET.get("key", ""),
                             request.GET.get("model", ""))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "title": _("Usage per key, model and day"), "rows": rows, "since": since,
                   "until": until, "key": request.GET.get("key", ""),
                   "model": request.GET.get("model", "")}
        return TemplateResponse(request, "admin/routing/usagerecord/summary.html", context)


def _date(text: str | None) -> date | None:
    try:
        return parse_date(text) if text else None
    except ValueError:
        return None


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "action", "actor", "target")
    list_filter = ("action", "created_at")
    search_fields = ("action", "actor", "target")
    date_hierarchy = "created_at"
    readonly_fields = ("created_at", "action", "actor", "target", "detail")
