"""Admin of the MCP servers: register one by URL (Streamable HTTP or SSE, its headers
kept encrypted and never shown back) or, for superusers only, a command the worker runs
over stdio; its tools are discovered after each save and on demand ("Refresh tools":
an action, and a button beside the discovered tools), shown read-only with links to
their ``Tool`` rows. A discovery that fails is a message, never an error page."""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from . import mcp_client
from .models import McpServer, Tool, Transport

KEPT = "********"  # a secret value shown masked; sent back unchanged, the stored one stays
STDIO_FIELDS = ("command", "args", "env_json")
STDIO_REFUSED = _("Only superusers may register stdio servers: their command runs on the "
                  "worker.")
SAVED = "_mcp_saved"  # the request attribute naming the server a save just stored


def _masked(values: dict[str, str] | None) -> str:
    return json.dumps({key: KEPT for key in values or {}}, indent=2) if values else ""


def _secrets(text: str, stored: dict[str, str] | None, label: str) -> dict[str, str]:
    """A JSON object of strings typed in the form; a value left as ``KEPT`` keeps the
    stored one (a key removed is dropped)."""
    if not text.strip():
        return {}
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(_("%(field)s: not JSON (%(error)s).")
                              % {"field": label, "error": exc.msg}) from None
    if not isinstance(values, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in values.items()):
        raise ValidationError(_("%(field)s must be a JSON object of strings.")
                              % {"field": label})
    stored = stored or {}
    missing = [key for key, value in values.items() if value == KEPT and key not in stored]
    if missing:
        raise ValidationError(_("%(field)s: no stored value to keep for %(keys)s.")
                              % {"field": label, "keys": ", ".join(missing)})
    return {key: stored[key] if value == KEPT else value for key, value in values.items()}


class McpServerForm(forms.ModelForm):
    url = forms.URLField(label=_("URL"), required=False, max_length=500,
                         assume_scheme="https",  # Django 6's default, said now
                         help_text=McpServer._meta.get_field("url").help_text)
    headers_json = forms.CharField(
        label=_("headers"), required=False, widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("A JSON object sent with every request, e.g. {\"Authorization\": "
                    "\"Bearer …\"}. Stored encrypted and shown as ********: a value left "
                    "so is kept, a new value replaces it, a key removed is dropped."))
    env_json = forms.CharField(
        label=_("environment"), required=False, widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("stdio: a JSON object, the only variables the program gets besides "
                    "PATH. Stored encrypted; values are shown as ********, as for the "
                    "headers."))

    superuser = False  # set per request by the admin's get_form

    class Meta:
        model = McpServer
        fields = ["name", "transport", "url", "command", "args", "timeout_s", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["headers_json"].initial = _masked(self.instance.headers)
        if "env_json" in self.fields:
            self.fields["env_json"].initial = _masked(self.instance.env)
        transport = self.fields.get("transport")  # absent from a read-only view
        if transport is not None and not self.superuser:  # stdio runs a command on the worker
            transport.choices = [choice for choice in transport.choices  # type: ignore[attr-defined]
                                 if choice[0] != Transport.STDIO]
            transport.error_messages["invalid_choice"] = STDIO_REFUSED

    def clean_headers_json(self) -> dict[str, str]:
        return _secrets(self.cleaned_data.get("headers_json") or "", self.instance.headers,
                        str(_("headers")))

    def clean_env_json(self) -> dict[str, str]:
        return _secrets(self.cleaned_data.get("env_json") or "", self.instance.env,
                        str(_("environment")))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        # Set before the model's own clean() runs (next), which checks them too.
        self.instance.headers = cleaned.get("headers_json") or None
        if "env_json" in self.fields:
            self.instance.env = cleaned.get("env_json") or None
        return cleaned


@admin.register(McpServer)
class McpServerAdmin(admin.ModelAdmin):
    form = McpServerForm
    list_filter = ("transport", "enabled")
    search_fields = ("name", "url")
    actions = ["refresh_tools", "check_connection"]
    readonly_fields = ("discovered", "refreshed_at", "last_error", "created_at", "updated_at")

    def get_fieldsets(self, request, obj=None):
        where = ["url", "headers_json"]
        if request.user.is_superuser:
            where += list(STDIO_FIELDS)
        return (
            (None, {"fields": ("name", "transport", "enabled", "timeout_s")}),
            (_("Where it runs"), {"fields": where}),
            (_("Discovered tools"), {"fields": ("discovered", "refreshed_at", "last_error")}),
            (_("History"), {"fields": ("created_at", "updated_at")}),
        )

    def get_list_display(self, request):
        superuser = request.user.is_superuser

        @admin.display(description=_("URL or command"))
        def location(obj: McpServer) -> str:
            if obj.transport != Transport.STDIO:
                return obj.url
            return " ".join([obj.command, *obj.args]) if superuser \
                else str(_("(a command: superusers only)"))

        return ("name", "transport", location, "enabled", "tool_count", "refreshed_at",
                "short_error")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if not request.user.is_superuser:
            form.base_fields.pop("env_json", None)
        return type(form.__name__, (form,), {"superuser": request.user.is_superuser})

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.transport == Transport.STDIO \
                and not request.user.is_superuser:
            return False  # its command runs on the worker: superusers' business
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.transport == Transport.STDIO \
                and not request.user.is_superuser:
            return False
        return super().has_delete_permission(request, obj)

    # --- columns and the tools table --------------------------------------------------

    @admin.display(description=_("tools"))
    def tool_count(self, obj: McpServer) -> int:
        return len(obj.tools or [])

    @admin.display(description=_("last error"))
    def short_error(self, obj: McpServer) -> str:
        return obj.last_error[:80] + ("…" if len(obj.last_error) > 80 else "")

    @admin.display(description=_("tools"))
    def discovered(self, obj: McpServer) -> str:
        if not obj.pk:
            return str(_("Discovered after the first save."))
        rows = {row.remote_name: row for row in Tool.objects.filter(server=obj)}
        lines = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (self._tool_link(rows.get(tool.get("name"))), tool.get("name"),
             tool.get("description", "")) for tool in obj.tools or []))
        button = format_html('<button type="submit" class="button" formaction="{}" '
                             'formnovalidate>{}</button>',
                             reverse("admin:chat_mcpserver_refresh", args=[obj.pk]),
                             _("Refresh tools"))
        return format_html('<table><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead>'
                           "<tbody>{}</tbody></table><p>{}</p>", _("tool"),
                           _("name on the server"), _("description"), lines, button)

    @staticmethod
    def _tool_link(row: Tool | None) -> str:
        if row is None:
            return "—"
        label = row.name if row.enabled else f"{row.name} ({_('disabled')})"
        try:
            return format_html('<a href="{}">{}</a>',
                               reverse("admin:chat_tool_change", args=[row.pk]), label)
        except NoReverseMatch:  # the tools' own admin is not registered
            return label

    # --- discovery ------------------------------------------------------------------------

    def _discover(self, request, server: McpServer) -> None:
        """Refresh ``server``'s tools and say how it went (a failure too, as a message)."""
        try:
            found = mcp_client.refresh(server.pk)
        except Exception as exc:  # an error page would hide the save that succeeded
            found = mcp_client.Discovery(False, error=f"{exc.__class__.__name__}: {exc}")
        if found.ok:
            self.message_user(request, _("%(server)s: %(tools)d tools discovered "
                                         "(%(added)d new, %(disabled)d disabled).")
                              % {"server": server.name, "tools": found.tools,
                                 "added": found.added, "disabled": found.disabled},
                              messages.SUCCESS)
        else:
            self.message_user(request, _("%(server)s: its tools could not be discovered: "
                                         "%(error)s") % {"server": server.name,
                                                         "error": found.error},
                              messages.ERROR)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        setattr(request, SAVED, obj.pk)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # Discovered once the save has committed: a stdio server's worker reads the row.
        response = super().changeform_view(request, object_id, form_url, extra_context)
        saved = getattr(request, SAVED, None)
        if saved is not None:
            server = McpServer.objects.filter(pk=saved).first()
            if server is not None and server.enabled:
                self._discover(request, server)
        return response

    @admin.action(description=_("Refresh tools (discover them now)"), permissions=["change"])
    def refresh_tools(self, request, queryset):
        for server in queryset:
            if self.has_change_permission(request, server):
                self._discover(request, server)
            else:
                self.message_user(request, _("%(server)s: only superusers may refresh a stdio "
                                             "server.") % {"server": server.name},
                                  messages.WARNING)

    @admin.action(description=_("Check connection (list the tools, store nothing)"),
                  permissions=["change"])
    def check_connection(self, request, queryset):
        for server in queryset:
            if not self.has_change_permission(request, server):
                continue  # a stdio server's command is not theirs to run
            ok, message = async_to_sync(mcp_client.acheck)(mcp_client.ServerConfig.of(server))
            self.message_user(request, f"{server.name}: {message}",
                              messages.SUCCESS if ok else messages.ERROR)

    def get_urls(self):
        view = self.admin_site.admin_view(require_POST(self.refresh_view))
        return [path("<int:pk>/refresh/", view, name="chat_mcpserver_refresh"),
                *super().get_urls()]

    def refresh_view(self, request, pk: int):
        server = get_object_or_404(McpServer, pk=pk)
        if not self.has_change_permission(request, server):
            raise PermissionDenied
        self._discover(request, server)
        return HttpResponseRedirect(reverse("admin:chat_mcpserver_change", args=[pk]))

