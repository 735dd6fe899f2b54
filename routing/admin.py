"""Admin for the model registry: validation that explains itself, the API key
write-only and masked, a "test connection" action; routing rules with a dry run."""

from __future__ import annotations

import json

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from modeltranslation.admin import TranslationAdmin

from inference.kinds import HTTP_ENGINES, LOCAL_ENGINES, SHORT_LABELS

# noqa below: imported to register the key, quota, usage and audit admins
from . import key_admin, quota_admin, usage_admin  # noqa: F401
from .balancer import disagreeing_names
from .breaker import Breaker, CircuitState, describe
from .explain import describe_condition
from .models import Balancing, ModelEndpoint, RoutingRule
from .rules import RequestFacts, resolve_route
from .services import check_connection, model_folder_problems, set_enabled, url_unreachable


class ModelEndpointForm(forms.ModelForm):
    api_key = forms.CharField(
        label=_("API key"), required=False, strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=_("Stored encrypted and never shown again. Leave empty to keep the current "
                    "key; tick “clear API key” to remove it."))
    clear_api_key = forms.BooleanField(label=_("clear API key"), required=False)

    class Meta:
        model = ModelEndpoint
        fields = [  # api_key is the write-only field above, not the model's
            "name", "display_name", "description", "engine", "enabled", "endpoint_url",
            "upstream_model", "model_path", "gpu_id", "tool_format", "context_window",
            "max_output_tokens", "weight", "balancing", "max_batch", "warm", "default_params",
            "connect_timeout", "first_byte_timeout", "total_timeout",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["balancing"].required = False  # left out: the default (weighted)

    def clean_balancing(self) -> str:
        return self.cleaned_data.get("balancing") or Balancing.WEIGHTED

    def clean(self):
        cleaned = super().clean()
        engine, path = cleaned.get("engine"), cleaned.get("model_path")
        if engine in LOCAL_ENGINES and path:
            problems = model_folder_problems(path, engine)
            if problems:
                self.add_error("model_path", "; ".join(problems))
        return cleaned

    def save(self, commit: bool = True):
        instance = super().save(commit=False)
        if self.cleaned_data.get("clear_api_key"):
            instance.api_key = ""
        elif self.cleaned_data.get("api_key"):
            instance.api_key = self.cleaned_data["api_key"]
        elif instance.pk:
            instance.api_key = ModelEndpoint.objects.get(pk=instance.pk).api_key
        if commit:
            instance.save()
        return instance


@admin.register(ModelEndpoint)
class ModelEndpointAdmin(TranslationAdmin):
    form = ModelEndpointForm
    # Few and narrow columns, so the list fits a 1366 px screen beside the admin's sidebars
    # (balancing, the key, the circuit and the last check are on each endpoint's page).
    list_display = ("name", "engine_kind", "location", "enabled", "weight", "health_state")
    list_filter = ("engine", "enabled", "health")
    search_fields = ("name", "display_name", "endpoint_url", "model_path", "upstream_model")
    readonly_fields = ("key_hint", "health", "health_detail", "health_checked_at", "circuit",
                       "created_at", "updated_at")
    actions = ["test_connection", "enable", "disable", "reset_circuit"]
    fieldsets = (
        (None, {"fields": ("name", "display_name", "description", "engine", "enabled")}),
        (_("Where it runs"), {"fields": ("endpoint_url", "upstream_model", "key_hint",
                                         "api_key", "clear_api_key", "model_path", "gpu_id",
                                         "tool_format")}),
        (_("Capacity and balancing"), {"fields": ("context_window", "max_output_tokens",
                                                  "weight", "balancing", "max_batch",
                                                  "warm")}),
        (_("Requests"), {"fields": ("default_params", "connect_timeout",
                                    "first_byte_timeout", "total_timeout")}),
        (_("Health"), {"fields": ("health", "health_detail", "health_checked_at", "circuit",
                                  "created_at", "updated_at")}),
    )

    @admin.display(description=_("API key"))
    def key_hint(self, obj: ModelEndpoint) -> str:
        return obj.masked_api_key or "—"

    @admin.display(description=_("circuit"))
    def circuit(self, obj: ModelEndpoint) -> str:
        return describe(Breaker().state(obj.pk)) if obj.pk else "—"

    @admin.display(description=_("endpoint or path"))
    def location(self, obj: ModelEndpoint) -> str:
        return obj.location

    @admin.display(description=_("engine"), ordering="engine")
    def engine_kind(self, obj: ModelEndpoint) -> str:
        short = SHORT_LABELS.get(obj.engine, obj.engine)
        return format_html('<span title="{}">{}</span>', obj.get_engine_display(), short)

    @admin.display(description=_("health"), ordering="health")
    def health_state(self, obj: ModelEndpoint) -> str:
        """The last check's verdict (its detail and time on hover), and the circuit when it
        is not closed."""
        circuit = Breaker().state(obj.pk)
        checked = (_("checked %(time)s") % {"time": date_format(
            timezone.localtime(obj.health_checked_at), "DATETIME_FORMAT")}
            if obj.health_checked_at else _("never checked"))
        hint = " · ".join(str(part) for part in (obj.health_detail, checked) if part)
        extra = format_html("<br><small>{}</small>", describe(circuit)) \
            if circuit.state != CircuitState.CLOSED else ""
        return format_html('<span title="{}">{}</span>{}', hint, obj.get_health_display(),
                           extra)

    def changelist_view(self, request, extra_context=None):
        # Shown on the list, where a save lands too (warning there as well would repeat it).
        self._warn_disagreeing_balancing(request)
        return super().changelist_view(request, extra_context)

    def _warn_disagreeing_balancing(self, request) -> None:
        names = disagreeing_names(ModelEndpoint.objects.order_by("name", "id")
                                  .values_list("name", "balancing"))
        if names:
            self.message_user(request, _("Instances of %(names)s disagree on balancing: the "
                                         "first instance's (lowest id) strategy applies to "
                                         "all of them.") % {"names": ", ".join(names)},
                              messages.WARNING)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if obj.engine in HTTP_ENGINES and obj.endpoint_url:
            problem = url_unreachable(obj.endpoint_url)
            if problem:
                self.message_user(request, _("Saved, but the endpoint is unreachable from "
                                             "this server: %(problem)s") % {"problem": problem},
                                  messages.WARNING)

    # Actions change an endpoint or spend a request: ``routing.change_modelendpoint``.
    @admin.action(description=_("Test connection (one-token request)"), permissions=["change"])
    def test_connection(self, request, queryset):
        for endpoint in queryset:
            result = async_to_sync(check_connection)(endpoint)
            level = messages.SUCCESS if result.ok else messages.ERROR
            self.message_user(request, f"{endpoint}: {result.detail} "
                              f"({result.latency_ms:.0f} ms)", level)

    @admin.action(description=_("Enable selected endpoints"), permissions=["change"])
    def enable(self, request, queryset):
        count = set_enabled(queryset, True)
        self.message_user(request, ngettext("%(count)d endpoint enabled.",
                                            "%(count)d endpoints enabled.", count)
                          % {"count": count})

    @admin.action(description=_("Disable selected endpoints"), permissions=["change"])
    def disable(self, request, queryset):
        count = set_enabled(queryset, False)
        self.message_user(request, ngettext("%(count)d endpoint disabled.",
                                            "%(count)d endpoints disabled.", count)
                          % {"count": count})

    @admin.action(description=_("Reset circuit (close it, forget recent failures)"),
                  permissions=["change"])
    def reset_circuit(self, request, queryset):
        breaker = Breaker()
        count = 0
        for endpoint_id in queryset.values_list("pk", flat=True):
            breaker.reset(endpoint_id)
            count += 1
        self.message_user(request, ngettext("%(count)d circuit reset.",
                                            "%(count)d circuits reset.", count)
                          % {"count": count})


# --- routing rules -------------------------------------------------------------------


class DryRunForm(forms.Form):
    """A pasted request and the facts that do not travel in its body."""

    request_json = forms.CharField(
        label=_("request (JSON)"), widget=forms.Textarea(attrs={"rows": 12, "cols": 80}),
        help_text=_('An OpenAI chat body, e.g. {"model": "emergency", "messages": '
                    '[{"role": "user", "content": "hi"}]}'))
    api_key = forms.CharField(label=_("API key prefix"), required=False)
    user = forms.CharField(label=_("user"), required=False)
    groups = forms.CharField(label=_("groups"), required=False,
                             help_text=_("Comma-separated."))
    language = forms.CharField(label=_("language"), required=False)
    flags = forms.CharField(label=_("plugin flags"), required=False,
                            help_text=_("Comma-separated, e.g. sensitive."))

    def clean_request_json(self) -> dict:
        try:
            body = json.loads(self.cleaned_data["request_json"])
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(_("Not valid JSON: %(error)s") % {"error": exc}) from None
        if not isinstance(body, dict):
            raise forms.ValidationError(_("The request must be a JSON object."))
        messages_ = body.get("messages", [])
        if not isinstance(messages_, list) or not all(isinstance(m, dict) for m in messages_):
            raise forms.ValidationError(_("“messages” must be a list of objects."))
        if not isinstance(body.get("model", ""), str):
            raise forms.ValidationError(_("“model” must be a string."))
        return body

    def facts(self) -> RequestFacts:
        data = self.cleaned_data
        body = data["request_json"]

        def split(text: str) -> frozenset[str]:
            return frozenset(p.strip() for p in text.split(",") if p.strip())

        return RequestFacts(model=body.get("model", ""), messages=body.get("messages", []),
                            api_key=data["api_key"], user=data["user"],
                            groups=split(data["groups"]), language=data["language"],
                            flags=split(data["flags"]))


@admin.register(RoutingRule)
class RoutingRuleAdmin(TranslationAdmin):
    list_display = ("priority", "name", "condition_summary", "target_model", "fallback_chain",
                    "enabled")
    list_display_links = ("name",)
    list_editable = ("enabled",)
    list_filter = ("enabled",)
    search_fields = ("name", "target_model")
    readonly_fields = ("created_at", "updated_at")
    fields = ("name", "description", "priority", "enabled", "condition", "target_model",
              "fallbacks", "created_at", "updated_at")
    change_list_template = "admin/routing/routingrule/change_list.html"

    @admin.display(description=_("condition"))
    def condition_summary(self, obj: RoutingRule) -> str:
        return describe_condition(obj.condition or {})

    @admin.display(description=_("fallbacks"))
    def fallback_chain(self, obj: RoutingRule) -> str:
        return " → ".join(obj.fallbacks or []) or "—"

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        missing = obj.unregistered_models()
        if missing:
            self.message_user(request, _("Saved, but these models are not in the registry: "
                                         "%(names)s") % {"names": ", ".join(missing)},
                              messages.WARNING)

    def get_urls(self):
        view = self.admin_site.admin_view(self.dry_run_view)
        return [path("dry-run/", view, name="routing_routingrule_dry_run"), *super().get_urls()]

    def dry_run_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = DryRunForm(request.POST or None)
        decision = facts = None
        if request.method == "POST" and form.is_valid():
            facts = form.facts()
            decision = resolve_route(facts)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "title": _("Routing dry run"), "form": form, "decision": decision,
                   "context_length": facts.context_length if facts else None}
        return TemplateResponse(request, "admin/routing/routingrule/dry_run.html", context)
