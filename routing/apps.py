from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save
from django.utils.translation import gettext_lazy as _


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = _("Routing and API keys")

    def ready(self) -> None:
        # Imported here, once the app registry is ready (Django's rule for models).
        from core.metrics import register_state
        from inference.remote import health_listeners

        from .key_models import ApiKey
        from .keys import keys_changed
        from .metrics import budget_states, model_states
        from .models import ModelEndpoint, RoutingRule
        from .rules import rules_changed
        from .services import record_worker_outcome
        from .usage import connect_signals

        # dispatch_uid: connected once however often ready() runs
        for model in (RoutingRule, ModelEndpoint):
            for signal in (post_save, post_delete):
                signal.connect(rules_changed, sender=model,
                               dispatch_uid=f"routing.rules_changed.{model.__name__}.{id(signal)}")
        for signal in (post_save, post_delete):
            signal.connect(keys_changed, sender=ApiKey,
                           dispatch_uid=f"routing.keys_changed.{id(signal)}")
        connect_signals()  # audit events: admin changes, failed logins
        register_state("models", model_states)
        register_state("budgets", budget_states)
        if record_worker_outcome not in health_listeners:
            health_listeners.append(record_worker_outcome)
