from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = _("Conversations")

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from .models import Conversation, Workflow
        from .workflows import nodes  # noqa: F401  (registers the workflow node types)
        from .workflows.compiler import pin_changed, workflows_changed

        for signal in (post_save, post_delete):
            signal.connect(workflows_changed, sender=Workflow,
                           dispatch_uid=f"chat.workflows_changed.{id(signal)}")
        post_save.connect(pin_changed, sender=Conversation, dispatch_uid="chat.pin_changed")
