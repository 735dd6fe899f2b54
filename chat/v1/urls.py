"""The chat app's part of the OpenAI-compatible API under ``/v1/`` (the shell's
``openclaw_site.urls`` mounts it with the jobs' files and batches, one namespace)."""

from django.urls import path

from . import completions, conversations, views

urlpatterns = [
    path("models", views.models, name="models"),
    path("chat/completions", completions.chat_completions, name="chat-completions"),
    path("embeddings", views.embeddings, name="embeddings"),
    path("key/successor", views.key_successor, name="key-successor"),
    path("conversations/import", conversations.import_conversation,
         name="conversation-import"),
    path("conversations/<uuid:conversation_id>/export", conversations.export_conversation,
         name="conversation-export"),
]
