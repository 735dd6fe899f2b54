"""``/studio/``: the page, its sign-in, and the small JSON API it calls (the shell mounts
them with the jobs' studio pages, one ``studio`` namespace); the workflow editor's page
and API (``editor_page``, ``editor_api``, ``run_api``)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from . import editor_api, editor_page, run_api, studio

urlpatterns = [
    path("", studio.page, name="page"),
    path("login/", auth_views.LoginView.as_view(template_name="studio/login.html"),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="studio:login"), name="logout"),
    path("api/conversations/", studio.conversations, name="conversations"),
    path("api/conversations/<str:conversation_id>/", studio.conversation,
         name="conversation"),
    path("api/conversations/<str:conversation_id>/steps/", run_api.steps, name="steps"),
    path("api/conversations/<str:conversation_id>/replay/", run_api.replay, name="replay"),
    path("api/memories/<int:memory_id>/delete/", studio.memory_delete, name="memory-delete"),
    path("api/quota/", studio.quota, name="quota"),
    path("api/tools/", studio.tools, name="tools"),
    # the workflow editor
    path("workflows/", editor_page.page, name="workflows"),
    path("workflows/<slug:slug>/", editor_page.page, name="workflow-editor"),
    path("api/node-types/", editor_api.node_types, name="node-types"),
    path("api/workflows/", editor_api.workflows, name="workflows-api"),
    path("api/workflows/validate/", editor_api.validate_definition, name="workflow-validate"),
    path("api/workflows/<slug:slug>/", editor_api.workflow, name="workflow-api"),
    path("api/workflows/<slug:slug>/versions/", editor_api.versions, name="workflow-versions"),
    path("api/workflows/<slug:slug>/versions/<int:number>/", editor_api.version,
         name="workflow-version"),
    path("api/workflows/<slug:slug>/versions/<int:number>/publish/", editor_api.publish,
         name="workflow-publish"),
    path("api/workflows/<slug:slug>/diff/", editor_api.diff, name="workflow-diff"),
    path("api/workflows/<slug:slug>/runs/", run_api.runs, name="workflow-runs"),
]
