from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

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
