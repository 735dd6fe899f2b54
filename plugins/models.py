"""Models of the plugins app: the chain as the admin configures it."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from .discovery import row_problems


class Plugin(models.Model):
    """One link of the plugin chain: which plugin (by name or dotted path), where in
    the order, whether it runs, its config (validated against the plugin's schema) and
    what happens when it fails at run time."""

    name = models.CharField(
        _("plugin"), max_length=255,
        help_text=_("A plugin's name (built-in, entry point or plugin folder) or the dotted "
                    "path of its class, e.g. mypackage.plugins.MyPlugin."))
    description = models.TextField(_("description"), blank=True,
                                   help_text=_("What this plugin does here, for the operators."))
    enabled = models.BooleanField(_("enabled"), default=True)
    order = models.PositiveIntegerField(
        _("order"), default=100, db_index=True,
        help_text=_("Lower numbers pre-process first and post-process last."))
    config = models.JSONField(_("configuration"), blank=True, default=dict,
                              help_text=_("JSON object; keys left out take the plugin's "
                                          "defaults."))
    fail_closed = models.BooleanField(
        _("fail closed"), default=False,
        help_text=_("When the plugin fails (raises, or cannot be loaded), refuse the request "
                    "instead of skipping the plugin."))
    in_studio = models.BooleanField(
        _("studio conversations"), default=True,
        help_text=_("Run on the studio's conversations."))
    all_api = models.BooleanField(
        _("all API traffic"), default=False,
        help_text=_("Run on every /v1 request. Off, /v1 traffic passes through unchanged "
                    "unless one of the scopes below names it."))
    api_keys = models.ManyToManyField(
        "routing.ApiKey", verbose_name=_("API keys"), blank=True,
        related_name="plugins",
        help_text=_("Run on the requests of these keys (and of their rotated successors)."))
    for_models = models.CharField(
        _("models"), max_length=1000, blank=True,
        help_text=_("Run on requests for these models: names separated by commas, “*” "
                    "matching any characters (e.g. “gpt-*, local-7b”)."))
    for_workflows = models.CharField(
        _("workflows"), max_length=1000, blank=True,
        help_text=_("Run inside these workflows: slugs separated by commas."))
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order", "id"]
        verbose_name = _("plugin")
        verbose_name_plural = _("plugins")

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def names(value: str) -> list[str]:
        """The comma-separated names of ``for_models`` or ``for_workflows``."""
        return [name.strip() for name in value.split(",") if name.strip()]

    def clean(self) -> None:
        """The plugin must load and the config must fit its schema; each problem of the
        config is reported with its path (``words[2]``)."""
        errors = row_problems(self.name, self.config)
        if errors:
            raise ValidationError(errors)
