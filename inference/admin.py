"""Admin for batch jobs: progress (done/failed/total, rate, ETA), invalid lines with
their numbers, the result files, and cancel / retry actions."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import batch
from .batch import BatchRefused
from .models import BatchFile, BatchJob


@admin.register(BatchJob)
class BatchJobAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "model", "progress", "rate", "eta", "owner", "created_at")
    list_filter = ("status", "model")
    search_fields = ("id", "model", "owner")
    actions = ["cancel", "retry"]
    fields = ("id", "status", "progress", "rate", "eta", "model", "endpoint", "owner",
              "api_key", "input_file", "output_link", "error_link", "invalid_lines", "error",
              "metadata", "chunk_size", "created_at", "in_progress_at", "completed_at",
              "cancelled_at", "failed_at")
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False  # submitted with `openclaw batch submit` or POST /v1/batches

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description=_("progress"))
    def progress(self, job: BatchJob) -> str:
        percent = 100 * job.processed / job.total if job.total else 0
        return format_html(
            '<progress max="100" value="{}"></progress> {} / {} ({} failed)',
            f"{percent:.0f}", job.done, job.total, job.failed)

    @admin.display(description=_("lines/s"))
    def rate(self, job: BatchJob) -> str:
        rate = job.rate()
        return f"{rate:.1f}" if rate else "—"

    @admin.display(description=_("ETA"))
    def eta(self, job: BatchJob) -> str:
        eta = job.eta_seconds()
        return f"{eta:.0f} s" if eta is not None else "—"

    def _file_link(self, file_id: str | None) -> str:
        if not file_id:
            return "—"
        url = reverse("admin:inference_batchfile_download", args=[file_id])
        return format_html('<a href="{}">{}</a>', url, file_id)

    @admin.display(description=_("results"))
    def output_link(self, job: BatchJob) -> str:
        return self._file_link(job.output_file_id)

    @admin.display(description=_("errors"))
    def error_link(self, job: BatchJob) -> str:
        return self._file_link(job.error_file_id)

    @admin.display(description=_("invalid lines"))
    def invalid_lines(self, job: BatchJob) -> str:
        if not job.validation_errors:
            return "—"
        return format_html("<ul>{}</ul>", format_html_join(
            "", "<li>{} {}: {}</li>",
            ((_("line"), p["line"], p["message"]) for p in job.validation_errors[:100])))

    @admin.action(description=_("Cancel selected jobs"))
    def cancel(self, request, queryset):
        self._each(request, queryset, batch.cancel_job, ngettext(
            "%(count)d job cancelled.", "%(count)d jobs cancelled.", queryset.count()))

    @admin.action(description=_("Retry the failed lines of selected jobs"))
    def retry(self, request, queryset):
        self._each(request, queryset, batch.retry_job, ngettext(
            "%(count)d job retried.", "%(count)d jobs retried.", queryset.count()))

    def _each(self, request, queryset, service, done_message: str) -> None:
        count = 0
        for job in queryset:
            try:
                service(job)
                count += 1
            except BatchRefused as exc:
                self.message_user(request, f"{job.pk}: {exc.message}", messages.WARNING)
        if count:
            self.message_user(request, done_message % {"count": count})


@admin.register(BatchFile)
class BatchFileAdmin(admin.ModelAdmin):
    list_display = ("id", "filename", "purpose", "bytes", "owner", "created_at", "download")
    list_filter = ("purpose",)
    search_fields = ("id", "filename", "owner")
    exclude = ("content",)
    readonly_fields = ("id", "filename", "purpose", "bytes", "owner", "created_at", "download")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description=_("download"))
    def download(self, file: BatchFile) -> str:
        url = reverse("admin:inference_batchfile_download", args=[file.pk])
        return format_html('<a href="{}">{}</a>', url, _("download"))

    def get_urls(self):
        return [path("<str:file_id>/download/", self.admin_site.admin_view(self.download_view),
                     name="inference_batchfile_download"), *super().get_urls()]

    def download_view(self, request, file_id: str) -> HttpResponse:
        file = self.get_object(request, file_id)
        if file is None or not self.has_view_permission(request, file):
            return HttpResponse(status=404)
        response = HttpResponse(batch.file_content(file), content_type="application/jsonl")
        response["Content-Disposition"] = f'attachment; filename="{file.filename}"'
        return response
