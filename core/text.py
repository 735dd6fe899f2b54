"""Client-given text and ids that every surface checks the same way: ``/v1``, the
studio's websocket and HTTP API, the jobs' API. A string with an unpaired surrogate
(``"\\ud800"`` parses as JSON) is not text: it cannot be encoded, stored or sent back;
an id holding NUL or a control character names no row, and PostgreSQL refuses NUL
outright. Found here, either is a clean refusal instead of a database error."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

MAX_ID_CHARS = 200


def lone_surrogate_at(value: Any, path: str = "") -> str | None:
    """Where in a JSON value the first string (or object key) with an unpaired surrogate
    is — ``path`` followed by ``.key`` and ``[index]`` steps — or None when there is none."""
    return string_at(value, _unpaired, path)


def unstorable_at(value: Any, path: str = "") -> str | None:
    """Where in a JSON value the first string (or key) is that PostgreSQL's ``jsonb``
    cannot store — an unpaired surrogate or NUL — or None."""
    return string_at(value, lambda text: "\x00" in text or _unpaired(text), path)


def string_at(value: Any, bad: Callable[[str], bool], path: str = "") -> str | None:
    """Where in a JSON value the first string (or object key) that ``bad`` refuses is, as
    ``path`` followed by ``.key`` and ``[index]`` steps, or None. Walked without
    recursion: a frame may nest deeply."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if bad(item):
                return where
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                step = f"{where}.{_shown(key)}" if where else _shown(key)
                if isinstance(key, str) and bad(key):
                    return step
                stack.append((child, step))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{index}]")
                         for index, child in reversed(list(enumerate(item))))
    return None


def _unpaired(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _shown(key: Any) -> str:
    """A key as a path step that can itself be sent (its surrogates escaped)."""
    return str(key).encode("utf-8", "backslashreplace").decode("utf-8")


def object_id(value: Any, max_chars: int = MAX_ID_CHARS) -> str | None:
    """``value`` when it can be an object's id — a non-empty string of at most
    ``max_chars`` printable characters (no NUL, control character or unpaired
    surrogate) — else None: no row has such an id, so the caller answers "not found"
    (or names the field) without asking the database."""
    if isinstance(value, str) and 0 < len(value) <= max_chars and value.isprintable():
        return value
    return None


def uuid_id(value: Any) -> str | None:
    """The canonical text of a UUID given as a string (any of the forms ``uuid.UUID``
    reads), else None."""
    if not isinstance(value, str) or object_id(value, 64) is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None
