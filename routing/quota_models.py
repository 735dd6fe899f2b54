"""Quotas of signed-in studio users: requests and tokens per period and a token budget,
set for one user, for the members of a group, or for everyone signed in. Which row a
user gets is ``routing.quotas``; the counting is ``routing.limits``, the same as an API
key's."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from .key_models import BudgetPeriod


class RatePeriod(models.TextChoices):
    MINUTE = "minute", _("Minute")
    HOUR = "hour", _("Hour")
    DAY = "day", _("Day")


class QuotaTarget(models.TextChoices):
    USER = "user", _("One user")
    GROUP = "group", _("Each member of a group")
    EVERYONE = "everyone", _("Everyone signed in")


class Quota(models.Model):
    """What a signed-in user may spend in the studio (the websocket, workflow runs,
    scheduled runs and resumes under their name).

    A user's quota is their own row if they have one; else, of their groups' rows, the
    most generous for each limit (the highest rate, a group that leaves a limit empty
    leaves it unlimited: joining a group never takes anything away); else the
    "everyone" row; else none. A group's quota is each member's own, not a pool they
    share. A row with every limit empty means "no limit" (to exempt one user or group).
    """

    target = models.CharField(_("applies to"), max_length=8, choices=QuotaTarget.choices,
                              default=QuotaTarget.USER)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, verbose_name=_("user"), null=True,
                                blank=True, on_delete=models.CASCADE, related_name="quota")
    group = models.OneToOneField("auth.Group", verbose_name=_("group"), null=True, blank=True,
                                 on_delete=models.CASCADE, related_name="quota")
    requests = models.PositiveIntegerField(
        _("requests"), null=True, blank=True, validators=[MinValueValidator(1)],
        help_text=_("Turns (messages, regenerations, approvals) per period; empty: no "
                    "limit."))
    requests_period = models.CharField(_("per"), max_length=8, choices=RatePeriod.choices,
                                       default=RatePeriod.MINUTE)
    tokens = models.PositiveIntegerField(
        _("tokens"), null=True, blank=True, validators=[MinValueValidator(1)],
        help_text=_("Prompt and answer tokens per period; empty: no limit."))
    tokens_period = models.CharField(_("per"), max_length=8, choices=RatePeriod.choices,
                                     default=RatePeriod.MINUTE)
    token_budget = models.PositiveBigIntegerField(
        _("token budget"), null=True, blank=True, validators=[MinValueValidator(1)],
        help_text=_("Tokens per budget period, shown to the user as a bar in the studio; "
                    "empty: no budget."))
    budget_period = models.CharField(_("budget period"), max_length=8,
                                     choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("studio quota")
        verbose_name_plural = _("studio quotas")
        ordering = ["target", "id"]
        constraints = [
            models.CheckConstraint(
                name="quota_target_matches",
                condition=(Q(target=QuotaTarget.USER, user__isnull=False, group__isnull=True)
                           | Q(target=QuotaTarget.GROUP, user__isnull=True,
                               group__isnull=False)
                           | Q(target=QuotaTarget.EVERYONE, user__isnull=True,
                               group__isnull=True))),
            models.UniqueConstraint(fields=["target"], condition=Q(target=QuotaTarget.EVERYONE),
                                    name="one_quota_for_everyone"),
        ]

    def __str__(self) -> str:
        if self.target == QuotaTarget.USER and self.user_id:
            return str(_("Quota of %(user)s") % {"user": self.user})
        if self.target == QuotaTarget.GROUP and self.group_id:
            return str(_("Quota of group %(group)s") % {"group": self.group})
        return str(_("Quota of everyone signed in"))

    def clean(self) -> None:
        """Say which field is missing or extra for what the row applies to."""
        errors: dict[str, ValidationError] = {}
        if self.target == QuotaTarget.USER:
            if self.user_id is None:
                errors["user"] = ValidationError(_("Pick the user this quota applies to."))
            if self.group_id is not None:
                errors["group"] = ValidationError(_(
                    "A quota for one user has no group; leave it empty or apply the quota "
                    "to the group instead."))
        elif self.target == QuotaTarget.GROUP:
            if self.group_id is None:
                errors["group"] = ValidationError(_("Pick the group this quota applies to."))
            if self.user_id is not None:
                errors["user"] = ValidationError(_(
                    "A group's quota has no user; leave it empty."))
        else:
            if self.user_id is not None or self.group_id is not None:
                errors["target"] = ValidationError(_(
                    "A quota for everyone names no user and no group; empty them or "
                    "choose who it applies to."))
            elif Quota.objects.filter(target=QuotaTarget.EVERYONE).exclude(pk=self.pk).exists():
                errors["target"] = ValidationError(_(
                    "There is already a quota for everyone; edit that one."))
        if errors:
            raise ValidationError(errors)
