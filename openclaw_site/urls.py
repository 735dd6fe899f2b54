from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from django.views.i18n import JavaScriptCatalog

from . import views
from .metrics import metrics_view
from .security import ThrottledAdminAuthenticationForm

admin.site.site_header = "OpenClaw"
admin.site.site_title = "OpenClaw"
admin.site.login_form = ThrottledAdminAuthenticationForm  # says so when locked out

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("v1/", include("chat.urls")),
    path("metrics", metrics_view, name="metrics"),  # token / CIDR restricted (settings)
    # annotation, datasets, fine-tuning jobs: inference.annotation_api (before studio/)
    path("studio/api/", include("inference.annotation_api")),
    path("studio/", include("chat.studio_urls")),
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
    path("i18n/", include("django.conf.urls.i18n")),
]
