"""API keys: a visible prefix plus a hash of the secret, scopes, CIDR allowlist,
limits, expiry and rotation. Behaviour lives in ``routing.keys``, ``routing.admission``
and ``routing.limits``."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from core.fields import EncryptedTextField


class BudgetPeriod(models.TextChoices):
    DAY = "day", _("Day")
    WEEK = "week", _("Week")
    MONTH = "month", _("Month")


def validate_cidr_list(value: Any) -> None:
    """A JSON list of IPv4/IPv6 networks (``10.0.0.0/8``, ``::1/128``, ``192.0.2.7``)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(_("Allowed networks must be a list of CIDR strings."))
    bad = []
    for item in value:
        try:
            ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            bad.append(item)
    if bad:
        raise ValidationError(_("Not a network in CIDR form (e.g. 10.0.0.0/8 or ::1/128): "
                                "%(bad)s") % {"bad": ", ".join(bad)})


def validate_model_list(value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValidationError(_("Allowed models must be a list of model names."))


class ApiKey(models.Model):
    """A client credential for the gateway.

    The secret is ``<prefix>.<random>``; only ``prefix`` (for an indexed lookup
    and for people to recognise the key) and ``secret_hash`` are stored. It is
    shown once, when created or rotated.
    """

    name = models.CharField(_("name"), max_length=200)
    prefix = models.CharField(_("prefix"), max_length=16, unique=True, editable=False)
    # SHA-256 hex of the whole secret. The secret has 32 random bytes, so a
    # fast hash is right: there is nothing to brute-force that a slow KDF
    # (meant for low-entropy passwords) would protect, and it is checked on
    # every request.
    secret_hash = models.CharField(max_length=64, editable=False)
    # Shared by a key and all its successors: rate-limit and budget counters
    # are kept per family so a rotation does not double a client's limits.
    family = models.CharField(max_length=16, db_index=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("owner"), null=True,
                              blank=True, on_delete=models.CASCADE, related_name="api_keys")
    allowed_models = models.JSONField(
        _("allowed models"), default=list, blank=True, validators=[validate_model_list],
        help_text=_("Model names this key may use; empty allows all."))
    allowed_cidrs = models.JSONField(
        _("allowed networks"), default=list, blank=True, validators=[validate_cidr_list],
        help_text=_("Client networks (IPv4 or IPv6 CIDR); empty allows any address."))
    rpm_limit = models.PositiveIntegerField(_("requests per minute"), null=True, blank=True,
                                            validators=[MinValueValidator(1)])
    tpm_limit = models.PositiveIntegerField(_("tokens per minute"), null=True, blank=True,
                                            validators=[MinValueValidator(1)])
    token_budget = models.PositiveBigIntegerField(_("token budget"), null=True, blank=True,
                                                  validators=[MinValueValidator(1)])
    budget_period = models.CharField(_("budget period"), max_length=8,
                                     choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    rotation_hours = models.PositiveIntegerField(
        _("rotate every (hours)"), default=72, help_text=_("0 never rotates automatically."))
    rotated_from = models.ForeignKey("self", verbose_name=_("rotated from"), null=True,
                                     blank=True, editable=False, on_delete=models.SET_NULL,
                                     related_name="successors")
    grace_until = models.DateTimeField(
        _("works until"), null=True, blank=True, editable=False,
        help_text=_("Set when the key is rotated: it is refused after this moment."))
    successor_secret = EncryptedTextField(
        _("successor's secret"), blank=True, editable=False,
        help_text=_("Kept encrypted after a rotation until the old key's holder fetches it "
                    "once (POST /v1/key/successor) during the grace period."))
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True, editable=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True,
                                        editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_rotated(self) -> bool:
        return self.grace_until is not None
