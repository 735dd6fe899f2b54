"""Celery tasks of the MCP client: the worker's side of a stdio server, whose command
runs here and never in a web process (``chat.tools.mcp_client`` sends these tasks and
waits for them). Each task re-reads the server by id, starts its command with only
``PATH`` and the row's variables in the environment, talks to it over one session
within the server's timeout, and answers a JSON object — ``{"error": why}`` when the
server could not be asked or the tool failed."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from celery import shared_task
from django.utils import translation
from django.utils.translation import gettext as _
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.stdio import get_default_environment

from . import mcp_client
from .mcp_sessions import ServerConfig, run_once
from .models import McpServer, Transport
from .registry import ToolFailed


def clean_launch(config: ServerConfig) -> StdioServerParameters:
    """The program with only PATH and the row's variables in its environment. The SDK
    always adds a few of the worker's own (HOME, USER, SHELL, …); ``env -u`` takes them
    away again by name, so no value ever appears on a command line."""
    unset = sorted(set(get_default_environment()) - {"PATH"} - set(config.env))
    launcher = shutil.which("env") or "/usr/bin/env"
    flags = [flag for name in unset for flag in ("-u", name)]
    return StdioServerParameters(command=launcher,
                                 args=[*flags, "--", config.command, *config.args],
                                 env=dict(config.env))


def _in_session(server_id: int, work) -> Any:
    server = McpServer.objects.filter(pk=server_id, transport=Transport.STDIO).first()
    if server is None:
        raise ToolFailed(_("The MCP server #%(id)d is not a registered stdio server.")
                         % {"id": server_id})
    config = ServerConfig.of(server)
    return asyncio.run(run_once(config, work, stdio_client(clean_launch(config))))


@shared_task(name=mcp_client.STDIO_LIST_TASK)
def mcp_stdio_list(server_id: int, language: str = "") -> dict[str, Any]:
    """The tools of stdio server ``server_id``: ``{"tools": [...]}``."""
    with translation.override(language or None):
        try:
            return {"tools": _in_session(server_id, mcp_client.list_on)}
        except ToolFailed as exc:
            return {"error": exc.message}


@shared_task(name=mcp_client.STDIO_CALL_TASK)
def mcp_stdio_call(server_id: int, tool: str, arguments: dict[str, Any],
                   language: str = "") -> dict[str, Any]:
    """One call of ``tool`` on stdio server ``server_id``: ``{"value": …}``."""

    async def call(client: Client) -> Any:
        return mcp_client.result_value(await client.call_tool(tool, arguments))

    with translation.override(language or None):
        try:
            return {"value": _in_session(server_id, call)}
        except ToolFailed as exc:
            return {"error": exc.message}
