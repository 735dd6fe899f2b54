"""ASGI entry point: ``/mcp`` to the MCP server (``chat.mcp_server``), the hot ``/v1``
routes straight to their views (``chat.v1.asgi``), the rest of HTTP to Django;
websockets go through the origin check and session auth to the apps' websocket
routes."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openclaw_site.settings")

# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from chat.mcp_server import McpRouter  # noqa: E402
from chat.v1.asgi import V1Router  # noqa: E402

from .websocket_urls import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": McpRouter(V1Router(django_asgi_app)),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
