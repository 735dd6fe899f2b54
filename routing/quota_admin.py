"""Admin for studio quotas: who a row applies to and its limits, each checked with a
message that says what to change; the list shows what each row allows and, for one
user, what they have used of it now. A change applies from the user's next turn."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from .limits import read
from .quota_models import Quota, QuotaTarget
from .quotas import most_generous


class QuotaForm(forms.ModelForm):
    class Meta:
        model = Quota
        fields = ["target", "user", "group", "requests", "requests_period", "tokens",
                  "tokens_period", "token_budget", "budget_period"]

    def clean(self):
        cleaned = super().clean()
        tokens, budget = cleaned.get("tokens"), cleaned.get("token_budget")
        if tokens and budget and cleaned.get("tokens_period") == "day" and \
                cleaned.get("budget_period") == "day" and tokens > budget:
            self.add_error("tokens", _(
                "More tokens a day (%(tokens)d) than the daily budget (%(budget)d): the "
                "budget would refuse first; lower this or raise the budget.")
                % {"tokens": tokens, "budget": budget})
        return cleaned


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    form = QuotaForm
    list_display = ("__str__", "target", "allows", "used_now", "updated_at")
    list_filter = ("target",)
    search_fields = ("user__username", "group__name")
    autocomplete_fields = ("user", "group")
    fieldsets = (
        (_("Applies to"), {"fields": ("target", "user", "group"),
                           "description": _(
                               "A user's own quota wins; without one, the most generous of "
                               "their groups' quotas applies, limit by limit (a group that "
                               "leaves a limit empty leaves it unlimited); without any, the "
                               "quota for everyone. A group's quota is each member's own, "
                               "not shared. Changes apply from the next turn.")}),
        (_("Limits (empty: no limit)"), {"fields": (
            ("requests", "requests_period"), ("tokens", "tokens_period"),
            ("token_budget", "budget_period"))}),
    )

    @admin.display(description=_("allows"))
    def allows(self, obj: Quota) -> str:
        parts = []
        if obj.requests:
            parts.append(_("%(n)d requests / %(period)s")
                         % {"n": obj.requests, "period": obj.get_requests_period_display()})
        if obj.tokens:
            parts.append(_("%(n)d tokens / %(period)s")
                         % {"n": obj.tokens, "period": obj.get_tokens_period_display()})
        if obj.token_budget:
            parts.append(_("budget %(n)d / %(period)s")
                         % {"n": obj.token_budget, "period": obj.get_budget_period_display()})
        return "; ".join(str(p) for p in parts) or str(_("no limit"))

    @admin.display(description=_("used now"))
    def used_now(self, obj: Quota) -> str:
        if obj.target != QuotaTarget.USER or obj.user_id is None:
            return "—"
        counted = read(most_generous([obj], obj.user_id))
        return ", ".join(f"{limit.kind}: {value}/{limit.ceiling}"
                         for limit, value in zip(counted.limits, counted.values, strict=True)) \
            or "—"
