"""Services of the plugins app: checking a row, the state of each row for the admin,
enabling and disabling, and reloading the plugins in every process."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from .chain import CHAIN
from .discovery import Discovery, row_problems
from .models import Plugin


def row_status(row: Plugin, found: Discovery) -> str:
    """"" when the row loads; otherwise why not (one line)."""
    problems = row_problems(row.name, row.config, found)
    return "; ".join(message for messages in problems.values() for message in messages)


def unconfigured(found: Discovery, rows: Iterable[Plugin]) -> list[str]:
    """Discovered plugins that no row uses yet."""
    used = {row.name for row in rows}
    return sorted(name for name in found.plugins if name not in used)


def set_enabled(rows: Iterable[Plugin], enabled: bool) -> int:
    """Enable or disable rows; every process's chain follows after the commit."""
    changed = 0
    with transaction.atomic():
        for row in rows:
            if row.enabled != enabled:
                row.enabled = enabled
                row.save(update_fields=["enabled", "updated_at"])  # signals bump the version
                changed += 1
    return changed


def reload_plugins() -> None:
    """Discover and load the plugins again in every process (after a plugin folder or
    an installed package changed; row changes reload by themselves)."""
    transaction.on_commit(CHAIN.bump)
