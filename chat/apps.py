from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save
from django.utils.translation import gettext_lazy as _


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = _("Conversations")

    def ready(self) -> None:
        # Imported here, once the app registry is ready (Django's rule for models).
        from core.rotation import register_rotator

        from .encryption import rotate_checkpoints
        from .models import Conversation, Workflow
        from .workflows import nodes  # noqa: F401  (registers the workflow node types)
        from .workflows.compiler import pin_changed, workflows_changed

        register_rotator(rotate_checkpoints)  # ``openclaw keys rotate-data``

        for signal in (post_save, post_delete):
            signal.connect(workflows_changed, sender=Workflow,
                           dispatch_uid=f"chat.workflows_changed.{id(signal)}")
        post_save.connect(pin_changed, sender=Conversation, dispatch_uid="chat.pin_changed")
