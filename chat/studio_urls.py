"""``/studio/``: the page, its sign-in, and the small JSON API it calls (the shell mounts
them with the jobs' studio pages, one ``studio`` namespace)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from . import studio

urlpatterns = [
    path("", studio.page, name="page"),
    path("login/", auth_views.LoginView.as_view(template_name="studio/login.html"),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="studio:login"), name="logout"),
    path("api/conversations/", studio.conversations, name="conversations"),
    path("api/conversations/<str:conversation_id>/", studio.conversation,
         name="conversation"),
    path("api/memories/<int:memory_id>/delete/", studio.memory_delete, name="memory-delete"),
    path("api/quota/", studio.quota, name="quota"),
    path("api/tools/", studio.tools, name="tools"),
]
