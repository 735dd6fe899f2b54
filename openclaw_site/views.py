"""The shell's own views: liveness, readiness, the Prometheus scrape and the icon that
browsers ask for at ``/favicon.ico``."""

from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseForbidden,
    HttpResponseRedirect,
    JsonResponse,
)
from django.templatetags.static import static
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from core.metrics import access_allowed, exposition

from .health import readiness


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving HTTP; nothing else is checked."""
    return JsonResponse({"status": "ok"})


@require_GET
async def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database, broker, channel layer and cache answer; 503 naming
    the ones that do not. ``?workers=1`` adds a task round trip through a worker."""
    include_worker = request.GET.get("workers", "").lower() in {"1", "true", "yes"}
    report = await readiness(include_worker=include_worker)
    return JsonResponse(report, status=200 if report["status"] == "ready" else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: Prometheus text format, 403 for a caller not allowed."""
    if not access_allowed(request):
        return HttpResponseForbidden("metrics: send the bearer token or scrape from an "
                                     "allowed network\n", content_type="text/plain")
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


@require_GET
@cache_control(max_age=86400, public=True)
def favicon(request: HttpRequest) -> HttpResponseRedirect:
    """``/favicon.ico``: the studio's icon, a static file (pages that name no icon, the
    admin's among them, get it from here)."""
    return HttpResponseRedirect(static("studio/favicon.ico"))
