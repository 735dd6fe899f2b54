"""What the ``openclaw`` command says before Django is set up (or without it): its
lines in the shell's language, read from the compiled catalogue with Python's own
``gettext`` — no settings, no apps, nothing started.

The language is chosen from the same locales as ``core.i18n.language_from_environment``
(``core.i18n.shell_locales``: ``OPENCLAW_LANGUAGE``, else the POSIX locale, the first
variable set deciding), without settings: any Chinese → 简体中文, else English. Before
the catalogues are compiled (a fresh checkout's first command) the lines stay English.
"""

from __future__ import annotations

import gettext
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from core.i18n import shell_locales

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
CHINESE = "zh_Hans"  # the catalogue's folder


def shell_language(environ: Mapping[str, str] | None = None) -> str | None:
    """The catalogue the shell asks for (``zh_Hans``), or None for English."""
    for part in shell_locales(environ):
        code = part.replace("-", "_").lower()
        if code == "zh" or code.startswith("zh_"):
            return CHINESE
        if code == "en" or code.startswith("en_"):
            return None
    return None


@cache
def _catalogue(language: str) -> gettext.NullTranslations:
    return gettext.translation("django", LOCALE_DIR, [language], fallback=True)


def said(message: str, params: Mapping[str, Any] | None = None) -> str:
    """``message`` (an English msgid marked with ``gettext_noop``) in the shell's
    language, its ``%(name)s`` placeholders filled from ``params``."""
    language = shell_language()
    text = _catalogue(language).gettext(message) if language else message
    return text % dict(params) if params else text
