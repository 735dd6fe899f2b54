from django.apps import AppConfig
from django.contrib.auth import get_user_model
from django.db.models.signals import m2m_changed, post_delete, post_migrate, post_save
from django.utils.translation import gettext_lazy as _


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = _("Conversations")

    def ready(self) -> None:
        # Imported here, once the app registry is ready (Django's rule for models).
        from core.rotation import register_rotator

        from .encryption import rotate_checkpoints
        from .models import Conversation, McpServer, Tool, Workflow
        from .tools import builtins, mcp_client, sync, workflow_tool  # noqa: F401  (tool callers)
        from .tools.service import tools_changed
        from .workflows import agent_node, nodes  # noqa: F401  (registers the node types)
        from .workflows.compiler import pin_changed, workflows_changed

        register_rotator(rotate_checkpoints)  # ``openclaw keys rotate-data``

        for signal in (post_save, post_delete):
            signal.connect(workflows_changed, sender=Workflow,
                           dispatch_uid=f"chat.workflows_changed.{id(signal)}")
        post_save.connect(pin_changed, sender=Conversation, dispatch_uid="chat.pin_changed")
        # Who may use which tool: any of these changes every process's copy.
        for signal in (post_save, post_delete):
            for sender in (Tool, McpServer, Workflow):
                signal.connect(tools_changed, sender=sender,
                               dispatch_uid=f"chat.tools_changed.{sender.__name__}.{id(signal)}")
        for through in (Tool.api_keys.through, Tool.users.through, Tool.groups.through,
                        Tool.workflows.through, get_user_model().groups.through):
            m2m_changed.connect(tools_changed, sender=through,
                                dispatch_uid=f"chat.tools_changed.{through.__name__}")
        # The built-in tools' rows, made (never overwritten) after every migrate.
        post_migrate.connect(sync.sync_after_migrate, sender=self,
                             dispatch_uid="chat.tools.sync_builtin_rows")
