"""Admin for the plugin chain: rows validated against each plugin's schema with the
problems named by their path in the config, each row's state, the plugins that
could not be loaded, and a reload for changed plugin folders."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from modeltranslation.admin import TranslationAdmin

from .discovery import Discovery, discover, resolve
from .models import Plugin
from .services import reload_plugins, row_status, set_enabled, unconfigured

if TYPE_CHECKING:  # django-stubs' alias, for type checking only (a dev dependency)
    from django_stubs_ext import StrOrPromise


class PluginForm(forms.ModelForm):
    class Meta:
        model = Plugin
        fields = ["name", "description", "enabled", "order", "fail_closed", "config",
                  "in_studio", "all_api", "api_keys", "for_models", "for_workflows"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["config"].widget = forms.Textarea(attrs={"rows": 12, "cols": 80,
                                                             "class": "vLargeTextField"})
        names = ", ".join(sorted(discover().plugins)) or "—"
        self.fields["name"].help_text = _("%(help)s Available: %(names)s.") % {
            "help": Plugin._meta.get_field("name").help_text, "names": names}


@admin.register(Plugin)
class PluginAdmin(TranslationAdmin):
    form = PluginForm
    list_display = ("order", "name", "enabled", "fail_closed", "version", "state",
                    "runs_on", "summary")
    list_display_links = ("name",)
    list_editable = ("order", "enabled")
    list_filter = ("enabled", "fail_closed")
    search_fields = ("name", "description")
    readonly_fields = ("plugin_help", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "description", "enabled", "order", "fail_closed",
                           "config", "plugin_help")}),
        (_("Where it runs"), {
            "description": _("A plugin runs on a request that any of these covers. "
                             "Traffic it does not cover passes through unchanged."),
            "fields": ("in_studio", "all_api", "api_keys", "for_models", "for_workflows")}),
        (None, {"fields": ("created_at", "updated_at")}),
    )
    filter_horizontal = ("api_keys",)
    actions = ["enable", "disable"]
    change_list_template = "admin/plugins/plugin/change_list.html"
    _local = threading.local()  # this request's discovery, for the list's columns

    def _found(self) -> Discovery:
        found = getattr(self._local, "found", None)
        return found if found is not None else discover()

    # --- columns -------------------------------------------------------------------------

    @admin.display(description=_("version"))
    def version(self, obj: Plugin) -> str:
        cls = self._class(obj)
        return cls.version if cls else "—"

    @admin.display(description=_("state"))
    def state(self, obj: Plugin) -> StrOrPromise:
        problem = row_status(obj, self._found())
        if problem:
            return format_html('<span style="color: var(--error-fg)">✖ {}</span>', problem)
        return "✔" if obj.enabled else _("ready (disabled)")

    @admin.display(description=_("runs on"))
    def runs_on(self, obj: Plugin) -> str:
        """The row's scopes in a few words."""
        scopes = [str(_("studio"))] if obj.in_studio else []
        if obj.all_api:
            scopes.append(str(_("all API traffic")))
        keys = len(obj.api_keys.all())
        if keys:
            scopes.append(ngettext("%(n)d key", "%(n)d keys", keys) % {"n": keys})
        scopes += [f"{_('models')}: {obj.for_models}"] if obj.for_models else []
        scopes += [f"{_('workflows')}: {obj.for_workflows}"] if obj.for_workflows else []
        return ", ".join(scopes) or str(_("nothing"))

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("api_keys")

    @admin.display(description=_("description"))
    def summary(self, obj: Plugin) -> str:
        cls = self._class(obj)
        return obj.description or (str(cls.description) if cls else "")

    @admin.display(description=_("about the plugin"))
    def plugin_help(self, obj: Plugin) -> StrOrPromise:
        cls = self._class(obj) if obj.name else None
        if cls is None:
            return _("Save with a plugin's name to see its settings.")
        found = self._found()
        return format_html(
            "<p>{} {} — {}</p><p>{}</p><p>{}</p><pre>{}</pre><p>{}</p><pre>{}</pre>",
            cls.name, cls.version, found.sources.get(cls.name, cls.__module__),
            str(cls.description), _("Defaults:"), json.dumps(cls.defaults, indent=2,
                                                             ensure_ascii=False),
            _("Configuration schema:"), json.dumps(cls.config_schema, indent=2,
                                                   ensure_ascii=False))

    def _class(self, obj: Plugin):
        try:
            return resolve(obj.name, self._found())
        except LookupError:
            return None

    # --- list page -----------------------------------------------------------------------

    def changelist_view(self, request, extra_context=None):
        self._local.found = found = discover()
        try:
            if request.method == "GET":  # a POST redirects here: once is enough
                self._report(request, found)
            return super().changelist_view(request, extra_context)
        finally:
            self._local.found = None

    def _report(self, request, found: Discovery) -> None:
        for problem in found.problems:
            self.message_user(request, _("Plugin skipped — %(problem)s (%(source)s)")
                              % {"problem": problem, "source": problem.source},
                              messages.ERROR)
        available = unconfigured(found, Plugin.objects.all())
        if available:
            self.message_user(request, _("Available, not in the chain yet: %(names)s.")
                              % {"names": ", ".join(available)}, messages.INFO)

    @admin.action(description=_("Enable the selected plugins"), permissions=["change"])
    def enable(self, request, queryset):
        count = set_enabled(queryset, True)
        self.message_user(request, ngettext("%(n)d plugin enabled.", "%(n)d plugins enabled.",
                                            count) % {"n": count})

    @admin.action(description=_("Disable the selected plugins"), permissions=["change"])
    def disable(self, request, queryset):
        count = set_enabled(queryset, False)
        self.message_user(request, ngettext("%(n)d plugin disabled.",
                                            "%(n)d plugins disabled.", count) % {"n": count})

    def get_urls(self):
        view = self.admin_site.admin_view(self.reload_view)
        return [path("reload/", view, name="plugins_plugin_reload"), *super().get_urls()]

    def reload_view(self, request):
        if request.method != "POST" or not self.has_change_permission(request):
            raise PermissionDenied
        reload_plugins()
        self.message_user(request, _("Every process will discover and load the plugins "
                                     "again on its next request."))
        return HttpResponseRedirect(reverse("admin:plugins_plugin_changelist"))
