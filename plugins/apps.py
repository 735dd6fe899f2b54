from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save
from django.utils.translation import gettext_lazy as _


class PluginsConfig(AppConfig):
    name = "plugins"
    verbose_name = _("Plugins")

    def ready(self) -> None:
        from .chain import plugins_changed
        from .models import Plugin

        # dispatch_uid: connected once however often ready() runs
        for signal in (post_save, post_delete):
            signal.connect(plugins_changed, sender=Plugin,
                           dispatch_uid=f"plugins.plugins_changed.{id(signal)}")
