from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = _("Routing and API keys")

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from .models import ModelEndpoint, RoutingRule
        from .rules import rules_changed

        # dispatch_uid: connected once however often ready() runs
        for model in (RoutingRule, ModelEndpoint):
            for signal in (post_save, post_delete):
                signal.connect(rules_changed, sender=model,
                               dispatch_uid=f"routing.rules_changed.{model.__name__}.{id(signal)}")

        from .key_models import ApiKey
        from .key_services import keys_changed

        for signal in (post_save, post_delete):
            signal.connect(keys_changed, sender=ApiKey,
                           dispatch_uid=f"routing.keys_changed.{id(signal)}")

        from .usage import connect_signals

        connect_signals()  # audit events: admin changes, failed logins
