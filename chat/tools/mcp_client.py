"""OpenClaw as an MCP client of the servers registered in the admin (``McpServer``),
with the official ``mcp`` SDK (its sessions held by ``chat.tools.mcp_sessions``).

- **Discovery**: ``refresh`` lists a server's tools (``alist_tools``) into the row and one
  ``Tool`` row (kind ``mcp``) per tool, named ``<server>__<tool>``; a tool that vanished
  from the server has its row disabled, not deleted, so the operator's settings survive
  its return.
- **Calls**: the caller of kind ``mcp`` (registered on import) calls an HTTP server on
  the session this event loop keeps with it; a **stdio** server's command runs in the
  Celery worker, never in a web process (``chat.tools.tasks``), and the web side waits
  for the task without blocking its event loop.

Every failure — the server down, refusing, too slow or answering nonsense, or the tool
reporting ``isError`` — is a ``ToolFailed`` with a message for the model: the run goes on.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from celery import current_app
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from mcp import Client
from mcp import types as mcp_types
from modeltranslation import settings as mt_settings

from core.snapshot import VersionedSnapshot

from .mcp_sessions import ServerConfig, aclose_sessions, call_tool, run_once, unreachable
from .models import McpServer, Tool, ToolKind, Transport
from .registry import Output, ToolContext, ToolFailed
from .service import ToolSpec, register_caller

__all__ = ["Discovery", "ServerConfig", "acheck", "aclose_sessions", "alist_tools",
           "arefresh", "call", "list_on", "refresh", "result_value", "row_name"]

STDIO_CALL_TASK = "chat.mcp_stdio_call"  # chat.tools.tasks, run by a worker
STDIO_LIST_TASK = "chat.mcp_stdio_list"
WORKER_GRACE_S = 15.0  # beyond the server's timeout: a worker's queue and the program's start
MAX_PAGES = 50  # of a tools/list answer (a server whose cursor never ends)


# Every process's copy of the rows, dropped when one changes (an admin save anywhere).
_configs = VersionedSnapshot("chat.mcp_servers", lambda version: {
    server.pk: ServerConfig.of(server) for server in McpServer.objects.all()})
for _signal in (post_save, post_delete):
    _signal.connect(_configs.changed, sender=McpServer,
                    dispatch_uid=f"chat.mcp_servers.{id(_signal)}")


# --- results ----------------------------------------------------------------------------


def _block_text(block: Any) -> str:
    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, mcp_types.EmbeddedResource):
        resource = block.resource
        return getattr(resource, "text", None) or f"[{resource.mime_type or 'blob'} " \
                                                  f"{resource.uri}]"
    if isinstance(block, mcp_types.ResourceLink):
        return f"[{block.uri}]"
    return f"[{getattr(block, 'mime_type', '') or block.type}]"  # an image, audio, …


def result_value(result: mcp_types.CallToolResult) -> Any:
    """What the model is given of a result: the text of its content, and its structured
    content beside it when there is one; a result with ``isError`` fails the call."""
    text = "\n".join(_block_text(block) for block in result.content)
    if result.is_error:
        raise ToolFailed(text or _("The MCP tool reported an error without saying which."))
    if result.structured_content is not None:
        return {"content": text, "structuredContent": result.structured_content}
    return text


def _tool_entry(tool: mcp_types.Tool) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": tool.name, "description": tool.description or "",
                             "inputSchema": tool.input_schema}
    if tool.annotations is not None:
        entry["annotations"] = tool.annotations.model_dump(mode="json", by_alias=True,
                                                           exclude_none=True)
    return entry


async def list_on(client: Client) -> list[dict[str, Any]]:
    """Every tool the server lists (each a ``_tool_entry``), page after page."""
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _page in range(MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return [_tool_entry(tool) for tool in tools]


# --- stdio: the worker's answer ---------------------------------------------------------


async def _in_worker(config: ServerConfig, task: str, args: list[Any]) -> dict[str, Any]:
    """Send ``task`` to a worker and wait for its answer, polling the result backend so
    the event loop (and no thread) waits."""
    timeout = config.timeout_s + WORKER_GRACE_S
    result = await asyncio.to_thread(
        current_app.send_task, task, args=args,
        kwargs={"language": translation.get_language() or ""}, expires=timeout)
    loop = asyncio.get_running_loop()
    deadline, pause = loop.time() + timeout, 0.01
    try:
        while not await asyncio.to_thread(result.ready):
            if loop.time() > deadline:
                raise unreachable(config, _("no worker answered within %(seconds)g s")
                                  % {"seconds": timeout})
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 0.25)
        outcome = await asyncio.to_thread(result.get, timeout=5, propagate=False)
    finally:
        await asyncio.to_thread(result.forget)
    if not isinstance(outcome, dict):
        raise unreachable(config, _("the worker failed: %(error)s") % {"error": outcome})
    if "error" in outcome:
        raise ToolFailed(outcome["error"])
    return outcome


# --- the public side --------------------------------------------------------------------


async def aconfig(server_id: int | None) -> ServerConfig | None:
    """The server's snapshot, as this process last read it (re-read after a change)."""
    return (await _configs.aget()).get(server_id) if server_id is not None else None


async def alist_tools(config: ServerConfig) -> list[dict[str, Any]]:
    """The server's tools (``name``, ``description``, ``inputSchema``, ``annotations``
    when it gives them); ``ToolFailed`` saying why when it cannot be asked."""
    if config.transport == Transport.STDIO:
        return (await _in_worker(config, STDIO_LIST_TASK, [config.id]))["tools"]
    return await run_once(config, list_on)


async def acheck(config: ServerConfig) -> tuple[bool, str]:
    """Whether the server answers, and what it offers or why not (for the admin)."""
    try:
        tools = await alist_tools(config)
    except ToolFailed as exc:
        return False, exc.message
    names = ", ".join(tool["name"] for tool in tools) or "—"
    return True, _("%(count)d tools: %(names)s") % {"count": len(tools), "names": names}


async def call(spec: ToolSpec, arguments: dict[str, Any], context: ToolContext) -> Any:
    """The caller of kind ``mcp``: ``spec.remote_name`` on server ``spec.server``."""
    config = await aconfig(spec.server)
    if config is None or not config.enabled:
        raise ToolFailed(_("The MCP server of “%(name)s” is not registered or is "
                           "disabled.") % {"name": spec.name})
    if config.transport == Transport.STDIO:
        outcome = await _in_worker(config, STDIO_CALL_TASK,
                                   [config.id, spec.remote_name, arguments])
        value = outcome["value"]
    else:
        value = result_value(await call_tool(config, spec.remote_name, arguments,
                                             spec.timeout_s))
    if isinstance(value, dict):  # structured: the model reads the text that comes with it
        return Output(value["content"], value["structuredContent"])
    return value


register_caller(ToolKind.MCP, call)


# --- discovery into rows ----------------------------------------------------------------


@dataclass(frozen=True)
class Discovery:
    """What a refresh did: ``ok`` with the counts of rows, or the error it stored."""

    ok: bool
    error: str = ""
    tools: int = 0
    added: int = 0
    disabled: int = 0


def row_name(server: str, remote: str, taken: set[str]) -> str:
    """``<server>__<tool>`` within the 64 letters, digits, “_” and “-” of a tool name; a
    name too long or already taken ends in a digest of the tool's own name instead."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", f"{server}__{remote}")
    if len(name) <= 64 and name not in taken:
        return name
    digest = hashlib.sha256(remote.encode()).hexdigest()
    for width in (8, 16):
        candidate = f"{name[:63 - width]}_{digest[:width]}"
        if candidate not in taken:
            return candidate
    raise ToolFailed(_("No free name for the tool “%(tool)s”.") % {"tool": remote})


def _store(server_id: int, found: list[dict[str, Any]]) -> Discovery:
    """Rows for ``found`` on the server, in one transaction (see ``refresh``)."""
    with transaction.atomic(), translation.override(mt_settings.DEFAULT_LANGUAGE):
        server = McpServer.objects.select_for_update().get(pk=server_id)
        before = {tool.get("name") for tool in server.tools or []}
        rows = {row.remote_name: row for row in Tool.objects.filter(server=server)}
        taken = set(Tool.objects.filter(name__startswith=server.name[:20])
                    .values_list("name", flat=True))
        added = disabled = 0
        for tool in found:
            row = rows.get(tool["name"])
            if row is None:
                row = Tool(kind=ToolKind.MCP, server=server, remote_name=tool["name"],
                           name=row_name(server.name, tool["name"], taken),
                           timeout_s=server.timeout_s)
                taken.add(row.name)
                added += 1
            elif tool["name"] not in before and not row.enabled:
                row.enabled = True  # it had vanished (and was disabled for that): back
            row.description = tool["description"]
            row.parameters = tool["inputSchema"] or {"type": "object", "properties": {}}
            row.save()
        for remote, row in rows.items():
            if remote not in {tool["name"] for tool in found} and row.enabled:
                row.enabled = False
                row.save(update_fields=["enabled", "updated_at"])
                disabled += 1
        # .update(): no signal, so the sessions of the unchanged row stay open.
        McpServer.objects.filter(pk=server_id).update(tools=found, refreshed_at=timezone.now(),
                                                      last_error="")
    return Discovery(True, tools=len(found), added=added, disabled=disabled)


def refresh(server_id: int) -> Discovery:
    """Discover the server's tools now and store them (the row's ``tools``,
    ``refreshed_at``, ``last_error`` and its ``Tool`` rows). A discovery that fails
    stores its error and changes no rows."""
    config = ServerConfig.of(McpServer.objects.get(pk=server_id))
    try:
        found = async_to_sync(alist_tools)(config)
    except ToolFailed as exc:
        McpServer.objects.filter(pk=server_id).update(last_error=exc.message)
        return Discovery(False, error=exc.message)
    return _store(server_id, found)


arefresh = sync_to_async(refresh)
