from django.apps import AppConfig
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.utils.translation import gettext_lazy as _


class PluginsConfig(AppConfig):
    name = "plugins"
    verbose_name = _("Plugins")

    def ready(self) -> None:
        from routing.key_models import ApiKey

        from .chain import plugins_changed, successor_created
        from .models import Plugin

        # dispatch_uid: connected once however often ready() runs
        for signal in (post_save, post_delete):
            signal.connect(plugins_changed, sender=Plugin,
                           dispatch_uid=f"plugins.plugins_changed.{id(signal)}")
        m2m_changed.connect(plugins_changed, sender=Plugin.api_keys.through,
                            dispatch_uid="plugins.plugins_changed.keys")
        post_save.connect(successor_created, sender=ApiKey,
                          dispatch_uid="plugins.successor_created")
