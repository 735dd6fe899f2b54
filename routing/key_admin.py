"""Admin for API keys: the secret shown once after creating or rotating, the
hash never; scopes and networks entered one per line and checked field by field."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .key_models import ApiKey, validate_cidr_list
from .keys import KeyRefused, assign_secret, revoke_key, rotate_key


class ListField(forms.CharField):
    """A list entered one item per line (or comma-separated); stored as a JSON list."""

    widget = forms.Textarea(attrs={"rows": 3})

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        text = super().to_python(value) or ""
        return [item.strip() for line in text.splitlines() for item in line.split(",")
                if item.strip()]


class ApiKeyForm(forms.ModelForm):
    allowed_models = ListField(label=_("allowed models"), required=False,
                               help_text=_("One model name per line; empty allows all."))
    allowed_cidrs = ListField(
        label=_("allowed networks"), required=False,
        help_text=_("One IPv4 or IPv6 network per line (10.0.0.0/8, ::1/128); empty allows "
                    "any address."))

    class Meta:
        model = ApiKey
        fields = ["name", "owner", "allowed_models", "allowed_cidrs", "rpm_limit", "tpm_limit",
                  "token_budget", "budget_period", "expires_at", "rotation_hours"]

    def clean_allowed_cidrs(self):
        value = self.cleaned_data["allowed_cidrs"]
        validate_cidr_list(value)  # a field-level error naming the bad entries
        return value

    def clean_allowed_models(self):
        value = self.cleaned_data["allowed_models"]
        bad = [m for m in value if any(c.isspace() for c in m)]
        if bad:
            raise ValidationError(_("Model names have no spaces: %(bad)s")
                                  % {"bad": ", ".join(bad)})
        return value


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ("prefix", "name", "owner", "scopes", "expires_at", "rotation_state",
                    "last_used_at", "created_at")
    list_filter = ("budget_period",)
    search_fields = ("prefix", "name", "owner__username")
    readonly_fields = ("prefix", "rotated_from", "grace_until", "revoked_at", "created_at",
                       "last_used_at")
    actions = ["rotate", "revoke"]

    def get_fieldsets(self, request, obj=None):
        state = (_("State"), {"fields": self.readonly_fields if obj else ()})
        return (
            (None, {"fields": ("name", "owner")}),
            (_("Scopes"), {"fields": ("allowed_models", "allowed_cidrs")}),
            (_("Limits"), {"fields": ("rpm_limit", "tpm_limit", "token_budget",
                                      "budget_period")}),
            (_("Lifetime"), {"fields": ("expires_at", "rotation_hours")}),
            *([state] if obj else []),
        )

    @admin.display(description=_("models"))
    def scopes(self, obj: ApiKey) -> str:
        return ", ".join(obj.allowed_models) or str(_("all"))

    @admin.display(description=_("rotation"))
    def rotation_state(self, obj: ApiKey) -> str:
        if obj.revoked_at:
            return str(_("revoked"))
        if obj.grace_until:
            return str(_("rotated, works until %(when)s") % {"when": obj.grace_until})
        if obj.rotation_hours:
            return str(_("every %(hours)d h") % {"hours": obj.rotation_hours})
        return str(_("never"))

    def save_model(self, request, obj, form, change):
        secret = None if change else assign_secret(obj)
        super().save_model(request, obj, form, change)
        if secret:
            self._show_secret(request, obj, secret)

    def _show_secret(self, request, obj: ApiKey, secret: str) -> None:
        self.message_user(request, _("Secret of %(key)s (shown only this once; store it now): "
                                     "%(secret)s") % {"key": obj, "secret": secret},
                          messages.WARNING)

    # A rotation shows the successor's secret: ``routing.change_apikey``, not only view.
    @admin.action(description=_("Rotate selected keys (issue successors)"),
                  permissions=["change"])
    def rotate(self, request, queryset):
        for key in queryset:
            try:
                new, secret = rotate_key(key)
            except KeyRefused as exc:
                self.message_user(request, f"{key}: {exc.message}", messages.ERROR)
                continue
            self._show_secret(request, new, secret)

    @admin.action(description=_("Revoke selected keys"), permissions=["change"])
    def revoke(self, request, queryset):
        count = 0
        for key in queryset.filter(revoked_at__isnull=True):
            revoke_key(key)
            count += 1
        self.message_user(request, ngettext("%(count)d key revoked.", "%(count)d keys revoked.",
                                            count) % {"count": count})
