"""Websocket URL patterns of every app, collected in one list for ``asgi.py``."""

from chat.routing import websocket_urlpatterns as chat_patterns

websocket_urlpatterns = [*chat_patterns]
