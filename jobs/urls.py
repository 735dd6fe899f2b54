"""The jobs' URLs, mounted by the shell (``openclaw_site.urls``): OpenAI's files and
batches under ``/v1/``, and the studio's Jobs page under ``/studio/`` (its annotation,
dataset and fine-tuning API is ``jobs.annotation_api``)."""

from django.urls import path

from . import studio, v1_api

v1_urlpatterns = [
    path("files", v1_api.files, name="files"),
    path("files/<str:file_id>", v1_api.file_detail, name="file"),
    path("files/<str:file_id>/content", v1_api.file_content, name="file-content"),
    path("batches", v1_api.batches, name="batches"),
    path("batches/<str:batch_id>", v1_api.batch_detail, name="batch"),
    path("batches/<str:batch_id>/cancel", v1_api.batch_cancel, name="batch-cancel"),
]

studio_urlpatterns = [
    path("jobs/", studio.page, name="jobs"),
    path("api/jobs/", studio.jobs, name="jobs-api"),
    path("api/jobs/batch/<str:job_id>/cancel/", studio.batch_action,
         {"action": "cancel"}, name="batch-cancel"),
    path("api/jobs/batch/<str:job_id>/retry/", studio.batch_action,
         {"action": "retry"}, name="batch-retry"),
    path("api/jobs/finetune/<int:job_id>/cancel/", studio.finetune_cancel,
         name="finetune-cancel"),
]
