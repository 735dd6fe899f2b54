"""The chat app's part of the OpenAI-compatible API under ``/v1/`` (the shell's
``openclaw_site.urls`` mounts it with the jobs' files and batches, one namespace)."""

from django.urls import path

from . import completions, conversations, legacy, messages, responses, views

urlpatterns = [
    path("models", views.models, name="models"),
    path("models/<path:model_id>", views.model, name="model"),
    path("chat/completions", completions.chat_completions, name="chat-completions"),
    path("completions", legacy.completions, name="completions"),
    path("responses", responses.responses, name="responses"),
    path("responses/<str:response_id>", responses.response, name="response"),
    path("responses/<str:response_id>/input_items", responses.input_items,
         name="response-input-items"),
    path("messages", messages.messages, name="messages"),
    path("messages/count_tokens", messages.count_tokens, name="messages-count-tokens"),
    path("embeddings", views.embeddings, name="embeddings"),
    path("key/successor", views.key_successor, name="key-successor"),
    path("conversations/import", conversations.import_conversation,
         name="conversation-import"),
    path("conversations/<uuid:conversation_id>/export", conversations.export_conversation,
         name="conversation-export"),
]
