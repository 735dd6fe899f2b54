"""The OpenAI-compatible API, mounted at ``/v1/``."""

from django.urls import path

from . import api, batch_api, conversation_api

app_name = "openai_api"

urlpatterns = [
    path("models", api.models, name="models"),
    path("chat/completions", api.chat_completions, name="chat-completions"),
    path("embeddings", api.embeddings, name="embeddings"),
    path("key/successor", api.key_successor, name="key-successor"),
    path("files", batch_api.files, name="files"),
    path("files/<str:file_id>", batch_api.file_detail, name="file"),
    path("files/<str:file_id>/content", batch_api.file_content, name="file-content"),
    path("batches", batch_api.batches, name="batches"),
    path("batches/<str:batch_id>", batch_api.batch_detail, name="batch"),
    path("batches/<str:batch_id>/cancel", batch_api.batch_cancel, name="batch-cancel"),
    path("conversations/import", conversation_api.import_conversation,
         name="conversation-import"),
    path("conversations/<uuid:conversation_id>/export", conversation_api.export_conversation,
         name="conversation-export"),
]
