"""The OpenAI-compatible API, mounted at ``/v1/``."""

from django.urls import path

from . import api

app_name = "openai_api"

urlpatterns = [
    path("models", api.models, name="models"),
    path("chat/completions", api.chat_completions, name="chat-completions"),
    path("embeddings", api.embeddings, name="embeddings"),
    path("key/successor", api.key_successor, name="key-successor"),
]
