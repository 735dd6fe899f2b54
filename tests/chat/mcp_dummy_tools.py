"""A built-in tool for the ``/mcp`` tests, found by the live web server through an
``openclaw.tools`` entry point that tests/chat/test_mcp_server.py declares in a
``*.dist-info`` folder on that process's ``PYTHONPATH`` (as pip would install it)."""

from __future__ import annotations

from typing import Any

from chat.tools.registry import BuiltinTool, ToolContext, ToolFailed


async def shout(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """The text in capitals, and who asked (the caller's identity reaches the tool)."""
    if arguments["text"] == "fail":
        raise ToolFailed("asked to fail")
    return {"text": arguments["text"].upper(), "user": context.user,
            "api_key": context.api_key}


SHOUT = BuiltinTool(
    name="mcp_test_shout", description="Repeats a text in capitals.",
    parameters={"type": "object", "properties": {"text": {"type": "string"}},
                "required": ["text"]},
    run=shout, timeout_s=5)
