"""The tools and MCP servers an operator registers in the admin (imported into
``chat.models``, so they are the chat app's models).

A ``Tool`` row is one callable thing an agent may be given: a built-in Python tool (its
code registered with ``chat.tools.registry.register_tool`` or the ``openclaw.tools``
entry-point group; the row holds what the operator tunes), a workflow run as a tool, or
a tool an MCP server offers (rows made when the server's tools are discovered). Who may
use it: every principal while its lists are empty; else the API keys, users and groups
listed. ``workflows`` limits the workflows whose agent nodes may call it.
"""

from __future__ import annotations

import re
from typing import ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from core.fields import EncryptedJSONField

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what OpenAI and MCP accept as a tool name
MAX_TIMEOUT_S = 600


def check_name(value: str) -> None:
    if not NAME.match(value or ""):
        raise ValidationError(_("A tool name is 1–64 letters, digits, “_” or “-”."))


class ToolKind(models.TextChoices):
    BUILTIN = "builtin", _("built-in")
    WORKFLOW = "workflow", _("workflow")
    MCP = "mcp", _("MCP server tool")


class Transport(models.TextChoices):
    STREAMABLE_HTTP = "streamable_http", _("Streamable HTTP")
    SSE = "sse", _("SSE")
    STDIO = "stdio", _("stdio (a command run by the worker)")


class McpServer(models.Model):
    """An MCP server whose tools agents may call: by URL (Streamable HTTP or SSE, with
    auth headers kept encrypted) or a command the worker runs over stdio (superusers
    only). ``tools`` is what the last discovery found."""

    name = models.SlugField(_("name"), max_length=40, unique=True, help_text=_(
        "Its tools are named “<name>__<tool>”."))
    transport = models.CharField(_("transport"), max_length=16, choices=Transport.choices,
                                 default=Transport.STREAMABLE_HTTP)
    url = models.URLField(_("URL"), max_length=500, blank=True, help_text=_(
        "Streamable HTTP or SSE endpoint, e.g. http://127.0.0.1:8000/mcp"))
    headers = EncryptedJSONField(_("headers"), null=True, blank=True, help_text=_(
        "Sent with every request, e.g. {\"Authorization\": \"Bearer …\"}; stored "
        "encrypted."))
    command = models.CharField(_("command"), max_length=500, blank=True, help_text=_(
        "stdio: the program the worker starts (a path or a name on its PATH)."))
    args = models.JSONField(_("arguments"), default=list, blank=True, help_text=_(
        "stdio: the program's arguments, a JSON list of strings."))
    env = EncryptedJSONField(_("environment"), null=True, blank=True, help_text=_(
        "stdio: the only environment variables the program gets (besides PATH), a JSON "
        "object; stored encrypted."))
    timeout_s = models.FloatField(_("timeout (s)"), default=30.0, help_text=_(
        "How long a tool call (and discovery) may take."))
    enabled = models.BooleanField(_("enabled"), default=True)
    tools = models.JSONField(_("discovered tools"), default=list, blank=True,
                             editable=False)
    refreshed_at = models.DateTimeField(_("refreshed"), null=True, blank=True,
                                        editable=False)
    last_error = models.TextField(_("last error"), blank=True, editable=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("MCP server")
        verbose_name_plural = _("MCP servers")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.transport == Transport.STDIO:
            if not self.command.strip():
                raise ValidationError({"command": _("A stdio server needs its command.")})
            if not isinstance(self.args, list) or not all(isinstance(a, str)
                                                          for a in self.args):
                raise ValidationError({"args": _("The arguments must be a JSON list of "
                                                 "strings.")})
            env = self.env or {}
            if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in env.items()):
                raise ValidationError({"env": _("The environment must be a JSON object of "
                                                "strings.")})
        elif not self.url:
            raise ValidationError({"url": _("A Streamable HTTP or SSE server needs its "
                                            "URL.")})
        headers = self.headers or {}
        if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in headers.items()):
            raise ValidationError({"headers": _("The headers must be a JSON object of "
                                                "strings.")})
        if not 0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise ValidationError({"timeout_s": _("The timeout must be between 0 and "
                                                  "%(max)d seconds.") % {"max": MAX_TIMEOUT_S}})


class Tool(models.Model):
    """One tool agents may be given (see the module's docstring)."""

    name = models.CharField(_("name"), max_length=64, unique=True, validators=[check_name],
                            help_text=_("What the model calls it: letters, digits, “_”, "
                                        "“-”."))
    kind = models.CharField(_("kind"), max_length=16, choices=ToolKind.choices)
    description = models.TextField(_("description"), blank=True, help_text=_(
        "What the model is told the tool does."))
    parameters = models.JSONField(_("parameters"), default=dict, blank=True, help_text=_(
        "The JSON schema of its arguments (built-in and MCP tools: from their code or "
        "server)."))
    builtin = models.CharField(_("built-in"), max_length=100, blank=True, help_text=_(
        "The registered built-in this row configures."))
    workflow = models.ForeignKey("chat.Workflow", verbose_name=_("workflow"), null=True,
                                 blank=True, on_delete=models.CASCADE,
                                 related_name="as_tools",
                                 help_text=_("The workflow this tool runs."))
    server = models.ForeignKey(McpServer, verbose_name=_("MCP server"), null=True,
                               blank=True, on_delete=models.CASCADE,
                               related_name="server_tools")
    remote_name = models.CharField(_("name on the server"), max_length=200, blank=True)
    timeout_s = models.FloatField(_("timeout (s)"), default=30.0)
    requires_approval = models.BooleanField(
        _("requires approval"), default=False,
        help_text=_("A person approves, edits or rejects each call before it runs."))
    public = models.BooleanField(
        _("public on /mcp"), default=False,
        help_text=_("Offered to MCP clients of OpenClaw's own /mcp endpoint."))
    enabled = models.BooleanField(_("enabled"), default=True)
    api_keys = models.ManyToManyField("routing.ApiKey", verbose_name=_("API keys"),
                                      blank=True, related_name="tools")
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, verbose_name=_("users"),
                                   blank=True, related_name="openclaw_tools")
    groups = models.ManyToManyField("auth.Group", verbose_name=_("groups"), blank=True,
                                    related_name="openclaw_tools")
    workflows = models.ManyToManyField(
        "chat.Workflow", verbose_name=_("only in workflows"), blank=True,
        related_name="tools", help_text=_("Empty: any workflow's agents may call it."))
    created_at = models.DateTimeField(_("created"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    objects: ClassVar[models.Manager[Tool]]  # modeltranslation's manager (chat/translation.py)

    class Meta:
        verbose_name = _("tool")
        verbose_name_plural = _("tools")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if not 0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise ValidationError({"timeout_s": _("The timeout must be between 0 and "
                                                  "%(max)d seconds.") % {"max": MAX_TIMEOUT_S}})
        if self.kind == ToolKind.WORKFLOW and self.workflow_id is None:
            raise ValidationError({"workflow": _("A workflow tool names its workflow.")})
        if self.kind == ToolKind.MCP and (self.server_id is None or not self.remote_name):
            raise ValidationError({"server": _("An MCP tool names its server and the tool's "
                                               "name there.")})
        if not isinstance(self.parameters, dict) or (
                self.parameters and self.parameters.get("type", "object") != "object"):
            raise ValidationError({"parameters": _("The parameters must be a JSON schema of "
                                                   "an object.")})
