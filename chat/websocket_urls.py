"""Websocket routes of the chat app: the studio protocol (docs/websocket.md)."""

from django.urls import re_path

from .consumers import ChatConsumer

websocket_urlpatterns = [
    re_path(r"^ws/chat/(?P<conversation>new|[0-9a-fA-F-]{32,36})/$", ChatConsumer.as_asgi()),
]
