"""Every URL of the site, from the apps' own URL lists: the shell is the one place that
knows them all (``/v1/`` gathers the chat app's and the jobs' routes under one
namespace, as ``/studio/`` does)."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from django.views.i18n import JavaScriptCatalog

from chat import studio_urls
from chat.v1 import urls as v1_urls
from jobs import urls as jobs_urls

from . import views
from .security import ThrottledAdminAuthenticationForm

admin.site.site_header = "OpenClaw"
admin.site.site_title = "OpenClaw"
admin.site.site_url = "/studio/"  # the admin's "View site"
admin.site.login_form = ThrottledAdminAuthenticationForm  # says so when locked out

urlpatterns = [
    path("", RedirectView.as_view(url="/studio/", permanent=False)),
    path("favicon.ico", views.favicon, name="favicon"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("v1/", include((v1_urls.urlpatterns + jobs_urls.v1_urlpatterns, "openai_api"))),
    path("metrics", views.metrics, name="metrics"),  # token / CIDR restricted (settings)
    # annotation, datasets, fine-tuning jobs: before the studio's own api/ routes
    path("studio/api/", include("jobs.annotation_api")),
    path("studio/", include((studio_urls.urlpatterns + jobs_urls.studio_urlpatterns,
                             "studio"))),
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
    path("i18n/", include("django.conf.urls.i18n")),
]
