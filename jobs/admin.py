"""Admin for batch jobs: progress (done/failed/total, rate, ETA), invalid lines with
their numbers, the result files, and cancel / retry actions. Then the training data:
annotations (filters by model, rating, tag, date), datasets (export, download),
fine-tuning jobs (the loss chart as server-side SVG, cancel) and Q/A pairs."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseRedirect
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from inference.kinds import EngineKind
from routing.models import ModelEndpoint

from . import batch, batch_files, datasets, finetune
from .batch import BatchRefused
from .datasets import DatasetRefused
from .finetune import FineTuneRefused
from .models import Annotation, BatchFile, BatchJob, Dataset, FineTuneJob
from .permissions import CHANGE_BATCHES, READ_CONTENT


@admin.register(BatchJob)
class BatchJobAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "model", "progress", "rate", "eta", "owner", "created_at")
    list_filter = ("status", "model")
    search_fields = ("id", "model", "owner")
    actions = ["cancel", "retry"]
    fields = ("id", "status", "progress", "rate", "eta", "model", "endpoint", "owner",
              "api_key", "input_file", "output_link", "error_link", "invalid_lines", "error",
              "metadata", "chunk_size", "created_at", "in_progress_at", "completed_at",
              "cancelled_at", "failed_at", "heartbeat_at", "requeued")
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False  # submitted with `openclaw batch submit` or POST /v1/batches

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_cancel_permission(self, request) -> bool:
        """Cancel and retry (the form itself stays read-only): ``jobs.change_batchjob``."""
        return request.user.has_perm(CHANGE_BATCHES)

    @admin.display(description=_("progress"))
    def progress(self, job: BatchJob) -> str:
        percent = 100 * job.processed / job.total if job.total else 0
        return format_html(
            '<progress max="100" value="{}"></progress> {}', f"{percent:.0f}",
            _("%(done)d / %(total)d (%(failed)d failed)")
            % {"done": job.done, "total": job.total, "failed": job.failed})

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
        url = reverse("admin:jobs_batchfile_download", args=[file_id])
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

    @admin.action(description=_("Cancel selected jobs"), permissions=["cancel"])
    def cancel(self, request, queryset):
        self._each(request, queryset, batch.cancel_job, ngettext(
            "%(count)d job cancelled.", "%(count)d jobs cancelled.", queryset.count()))

    @admin.action(description=_("Retry the failed lines of selected jobs"),
                  permissions=["cancel"])
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
        url = reverse("admin:jobs_batchfile_download", args=[file.pk])
        return format_html('<a href="{}">{}</a>', url, _("download"))

    def get_urls(self):
        return [path("<str:file_id>/download/", self.admin_site.admin_view(self.download_view),
                     name="jobs_batchfile_download"), *super().get_urls()]

    def download_view(self, request, file_id: str) -> HttpResponse:
        file = self.get_object(request, file_id)
        if file is None or not self.has_view_permission(request, file):
            return HttpResponse(status=404)
        if not request.user.has_perm(READ_CONTENT):  # its lines are API users' prompts
            raise PermissionDenied
        response = HttpResponse(batch_files.file_content(file), content_type="application/jsonl")
        response["Content-Disposition"] = f'attachment; filename="{file.filename}"'
        return response


# --- annotation, datasets, fine-tuning -----------------------------------------------


class TagFilter(admin.SimpleListFilter):
    title = _("tag")
    parameter_name = "tag"

    def lookups(self, request, model_admin):
        tags = set()
        for row in Annotation.objects.values_list("tags", flat=True)[:5000]:
            tags.update(row or [])
        return [(tag, tag) for tag in sorted(tags, key=str.lower)]

    def queryset(self, request, queryset):
        return queryset.filter(tags__contains=[self.value()]) if self.value() else queryset


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    list_display = ("message", "message_model", "rating", "tag_list", "corrected", "annotator",
                    "updated_at")
    list_filter = ("rating", ("message__model", admin.AllValuesFieldListFilter), TagFilter,
                   "updated_at")
    date_hierarchy = "updated_at"
    search_fields = ("annotator__username", "message__conversation__id")
    list_select_related = ("message", "annotator")
    fields = ("message", "message_model", "annotator", "rating", "tags", "original",
              "corrected_content", "created_at", "updated_at")
    readonly_fields = ("message", "message_model", "annotator", "original", "created_at",
                       "updated_at")

    def has_add_permission(self, request) -> bool:
        return False  # annotations are made in the studio, on a reply

    # Not named ``model``: ModelAdmin.model is the admin's model class, which hid the method.
    @admin.display(description=_("model"), ordering="message__model")
    def message_model(self, annotation: Annotation) -> str:
        return annotation.message.model

    @admin.display(description=_("tags"))
    def tag_list(self, annotation: Annotation) -> str:
        return ", ".join(annotation.tags)

    @admin.display(description=_("corrected"), boolean=True)
    def corrected(self, annotation: Annotation) -> bool:
        return bool(annotation.corrected_content)

    @admin.display(description=_("original reply"))
    def original(self, annotation: Annotation) -> str:
        if not self._can_read(annotation):
            return str(_("(needs the “Can read decrypted message content” permission)"))
        return str(annotation.message.value)

    def _can_read(self, annotation: Annotation) -> bool:
        request = getattr(self, "_request", None)
        return bool(request and request.user.has_perm("chat.view_message_content"))

    def get_fields(self, request, obj=None):
        self._request = request
        fields = super().get_fields(request, obj)
        if request.user.has_perm("chat.view_message_content"):
            return fields
        return [f for f in fields if f != "corrected_content"]


class DatasetForm(forms.ModelForm):
    class Meta:
        model = Dataset
        fields = ("name", "filters", "include_flagged")
        help_texts = {"filters": _("JSON object; keys: %(keys)s.")
                      % {"keys": ", ".join(datasets.FILTER_KEYS)}}

    def clean(self):
        cleaned = super().clean()
        try:
            datasets.clean_filters(cleaned.get("filters"))
        except DatasetRefused as exc:
            raise forms.ValidationError({"filters": exc.message}) from None
        return cleaned


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    form = DatasetForm
    list_display = ("name", "version", "line_count", "excluded_count", "include_flagged",
                    "short_hash", "created_by", "created_at", "download")
    list_filter = ("include_flagged", "created_at")
    search_fields = ("name", "sha256")
    readonly_fields = ("version", "line_count", "excluded_count", "sha256", "created_by",
                       "created_at", "download")

    def get_queryset(self, request):
        return super().get_queryset(request).defer("content")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("name", "filters", "include_flagged", *self.readonly_fields)

    def get_fields(self, request, obj=None):
        return ("name", "filters", "include_flagged") if obj is None else \
            self.get_readonly_fields(request, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def has_add_permission(self, request) -> bool:
        """An export is everyone's selected conversations, decrypted: it also needs
        ``chat.view_message_content``."""
        return super().has_add_permission(request) and request.user.has_perm(READ_CONTENT)

    def save_model(self, request, obj, form, change) -> None:
        """Adding a dataset exports it: the next version of that name."""
        try:
            saved = datasets.export_dataset(obj.name, obj.filters,
                                            include_flagged=obj.include_flagged,
                                            user=request.user)
        except DatasetRefused as exc:
            raise forms.ValidationError(exc.message) from None
        obj.pk = saved.pk
        obj.refresh_from_db()

    def add_view(self, request, form_url="", extra_context=None):
        try:
            return super().add_view(request, form_url, extra_context)
        except forms.ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
            return HttpResponseRedirect(request.path)

    @admin.display(description=_("SHA-256"))
    def short_hash(self, dataset: Dataset) -> str:
        return dataset.sha256[:12]

    @admin.display(description=_("download"))
    def download(self, dataset: Dataset) -> str:
        url = reverse("admin:jobs_dataset_download", args=[dataset.pk])
        return format_html('<a href="{}">{}</a>', url, _("download"))

    def get_urls(self):
        return [path("<int:dataset_id>/download/",
                     self.admin_site.admin_view(self.download_view),
                     name="jobs_dataset_download"), *super().get_urls()]

    def download_view(self, request, dataset_id: int) -> HttpResponse:
        dataset = self.get_object(request, str(dataset_id))
        if dataset is None or not self.has_view_permission(request, dataset):
            return HttpResponse(status=404)
        if not request.user.has_perm(READ_CONTENT):  # its lines are conversations' text
            raise PermissionDenied
        response = HttpResponse(bytes(dataset.content), content_type="application/jsonl")
        response["Content-Disposition"] = (
            f'attachment; filename="{dataset.name}-v{dataset.version}.jsonl"')
        return response


class FineTuneJobForm(forms.ModelForm):
    class Meta:
        model = FineTuneJob
        fields = ("base_endpoint", "dataset", "suffix", "lora_rank", "lora_alpha",
                  "learning_rate", "epochs", "max_steps", "queue")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "base_endpoint" in self.fields:
            self.fields["base_endpoint"].queryset = ModelEndpoint.objects.filter(
                engine=EngineKind.TRANSFORMERS)

    def clean(self):
        cleaned = super().clean()
        try:
            if cleaned.get("base_endpoint"):
                finetune.check_base(cleaned["base_endpoint"])
                finetune.check_queue(cleaned["base_endpoint"], cleaned.get("queue"))
            finetune.check_settings({k: cleaned.get(k) for k in finetune.LIMITS})
        except FineTuneRefused as exc:
            raise forms.ValidationError({exc.field or "__all__": exc.message}) from None
        return cleaned


@admin.register(FineTuneJob)
class FineTuneJobAdmin(admin.ModelAdmin):
    form = FineTuneJobForm
    list_display = ("id", "base_endpoint", "dataset", "status", "progress_bar", "last_loss",
                    "queue", "result_endpoint", "created_at")
    list_filter = ("status", "queue")
    list_select_related = ("base_endpoint", "dataset", "result_endpoint")
    actions = ["cancel"]
    readonly_fields = ("status", "progress_bar", "loss_chart", "output_path",
                       "result_link", "error", "celery_task_id", "cancel_requested",
                       "created_by", "created_at", "started_at", "finished_at",
                       "heartbeat_at", "requeued")

    def get_fields(self, request, obj=None):
        settings_ = list(FineTuneJobForm.Meta.fields)
        return settings_ if obj is None else [*settings_, *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else (*FineTuneJobForm.Meta.fields, *self.readonly_fields)

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change) -> None:
        """Adding a job queues it on the chosen queue."""
        job = finetune.create_job(obj.base_endpoint, obj.dataset, user=request.user,
                                  **{f: getattr(obj, f) for f in FineTuneJobForm.Meta.fields
                                     if f not in ("base_endpoint", "dataset")})
        obj.pk = job.pk
        obj.refresh_from_db()

    @admin.display(description=_("progress"))
    def progress_bar(self, job: FineTuneJob) -> str:
        return format_html('<progress max="100" value="{}"></progress> {} / {}',
                           f"{100 * job.progress:.0f}", job.step, job.total_steps or "—")

    @admin.display(description=_("last loss"))
    def last_loss(self, job: FineTuneJob) -> str:
        return f"{job.losses[-1][1]:.4f}" if job.losses else "—"

    @admin.display(description=_("training loss"))
    def loss_chart(self, job: FineTuneJob) -> str:
        return render_to_string("admin/jobs/finetunejob/loss_chart.html", {
            "job": job, "chart": finetune.loss_chart(job.losses),
            "points": len(job.losses),
            "last_loss": job.losses[-1][1] if job.losses else None})

    @admin.display(description=_("result model"))
    def result_link(self, job: FineTuneJob) -> str:
        endpoint = job.result_endpoint
        if endpoint is None:
            return "—"
        url = reverse("admin:routing_modelendpoint_change", args=[job.result_endpoint_id])
        state = _("enabled") if endpoint.enabled else _("disabled: enable it there")
        return format_html('<a href="{}">{}</a> ({})', url, endpoint.name, state)

    @admin.action(description=_("Cancel selected jobs"), permissions=["change"])
    def cancel(self, request, queryset):
        count = 0
        for job in queryset:
            try:
                finetune.cancel_job(job)
                count += 1
            except FineTuneRefused as exc:
                self.message_user(request, f"{job.pk}: {exc.message}", messages.WARNING)
        if count:
            self.message_user(request, ngettext("%(count)d job cancelled.",
                                                "%(count)d jobs cancelled.", count)
                              % {"count": count})
