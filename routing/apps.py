from django.apps import AppConfig
from django.contrib.auth import get_user_model
from django.db.models.signals import m2m_changed, post_delete, post_save
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
        from .quota_models import Quota
        from .quotas import quotas_changed, user_changed
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
        # A quota, a user (active or not) or a group membership changed: every
        # process's copy of the users' quotas is dropped.
        user = get_user_model()
        for signal in (post_save, post_delete):
            signal.connect(quotas_changed, sender=Quota,
                           dispatch_uid=f"routing.quotas_changed.{id(signal)}")
        post_save.connect(user_changed, sender=user, dispatch_uid="routing.quotas.user_saved")
        post_delete.connect(quotas_changed, sender=user,
                            dispatch_uid="routing.quotas.user_deleted")
        m2m_changed.connect(quotas_changed, sender=user.groups.through,
                            dispatch_uid="routing.quotas.groups_changed")
        connect_signals()  # audit events: admin changes, failed logins
        register_state("models", model_states)
        register_state("budgets", budget_states)
        if record_worker_outcome not in health_listeners:
            health_listeners.append(record_worker_outcome)
