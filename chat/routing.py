"""Websocket routes of the chat app (the studio protocol is added here)."""

websocket_urlpatterns: list = []
