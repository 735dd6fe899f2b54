"""``/studio/``: the page, its sign-in, and the small JSON API it calls."""

from django.contrib.auth import views as auth_views
from django.urls import path

from . import studio, studio_jobs

app_name = "studio"

urlpatterns = [
    path("", studio.page, name="page"),
    path("login/", auth_views.LoginView.as_view(template_name="studio/login.html"),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="studio:login"), name="logout"),
    path("api/conversations/", studio.conversations, name="conversations"),
    path("api/conversations/<str:conversation_id>/", studio.conversation,
         name="conversation"),
    path("api/memories/<int:memory_id>/delete/", studio.memory_delete, name="memory-delete"),
    path("jobs/", studio_jobs.page, name="jobs"),
    path("api/jobs/", studio_jobs.jobs, name="jobs-api"),
    path("api/jobs/batch/<str:job_id>/cancel/", studio_jobs.batch_action,
         {"action": "cancel"}, name="batch-cancel"),
    path("api/jobs/batch/<str:job_id>/retry/", studio_jobs.batch_action,
         {"action": "retry"}, name="batch-retry"),
    path("api/jobs/finetune/<int:job_id>/cancel/", studio_jobs.finetune_cancel,
         name="finetune-cancel"),
]
