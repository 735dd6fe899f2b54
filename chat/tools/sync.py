"""The ``Tool`` rows of the registered built-ins: each built-in gets its row once, with
its description in every language, its schema, timeout and approval flag. After that
the row is the operator's: only its ``parameters`` follow the code (the schema is the
code's contract, which the admin shows read-only).

Run after ``migrate`` (``sync_after_migrate``, a ``post_migrate`` receiver) and by
``openclaw up``, so a built-in added by an upgrade or a package appears by itself.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, IntegrityError, transaction
from django.utils import translation
from modeltranslation.utils import build_localized_fieldname

from .models import Tool, ToolKind
from .registry import BuiltinTool, builtin_tools

logger = logging.getLogger(__name__)


def descriptions(text: str) -> dict[str, str]:
    """``description_<lang>`` of a ``gettext_noop`` text in each of ``LANGUAGES``."""
    found = {}
    for code, _name in settings.LANGUAGES:
        with translation.override(code):
            found[build_localized_fieldname("description", code)] = translation.gettext(text)
    return found


def _new_row(tool: BuiltinTool) -> Tool:
    return Tool(name=tool.name, kind=ToolKind.BUILTIN, builtin=tool.name,
                parameters=tool.parameters, timeout_s=tool.timeout_s,
                requires_approval=tool.requires_approval, **descriptions(tool.description))


def sync_builtin_rows(using: str = DEFAULT_DB_ALIAS) -> list[Tool]:
    """Make the rows of the built-ins that have none, and bring the existing rows'
    ``parameters`` up to the code's; the rows made. A built-in whose name another
    kind of tool already took is left out (and logged): the operator renames one."""
    rows = Tool.objects.using(using)
    existing = {row.builtin or row.name: row for row in rows.filter(kind=ToolKind.BUILTIN)}
    taken = set(rows.values_list("name", flat=True))
    made: list[Tool] = []
    for name, tool in sorted(builtin_tools().items()):
        row = existing.get(name)
        if row is not None:
            _refresh(row, tool, using)
        elif name in taken:
            logger.warning("built-in tool %s has no row: another tool has its name", name)
        else:
            row = _new_row(tool)
            try:
                with transaction.atomic(using=using):
                    row.save(using=using)
            except IntegrityError:  # another process made it meanwhile
                continue
            made.append(row)
    return made


def _refresh(row: Tool, tool: BuiltinTool, using: str) -> None:
    if row.parameters != tool.parameters:
        row.parameters = tool.parameters
        row.save(using=using, update_fields=["parameters", "updated_at"])


def sync_after_migrate(sender: Any, *, using: str = DEFAULT_DB_ALIAS,
                       apps: Any = None, **kwargs: Any) -> None:
    """``post_migrate`` receiver: the built-ins' rows, once the chat app's tables are
    there (a migration back to before them skips it)."""
    if getattr(sender, "label", "chat") != "chat":
        return
    if apps is not None:
        try:
            apps.get_model("chat", "Tool")
        except LookupError:
            return
    sync_builtin_rows(using)
