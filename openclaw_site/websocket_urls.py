"""Websocket URL patterns of every app, collected in one list for ``asgi.py``."""

from chat.websocket_urls import websocket_urlpatterns as chat_patterns

websocket_urlpatterns = [*chat_patterns]
