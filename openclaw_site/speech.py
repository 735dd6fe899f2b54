"""What the ``openclaw`` command says before Django is set up (or without it): its
lines in the shell's language, read from the compiled catalogue with Python's own
``gettext`` — no settings, no apps, nothing started.

The language is chosen as ``core.i18n.language_from_environment`` chooses it:
``OPENCLAW_LANGUAGE``, else the POSIX locale (``LANGUAGE``, ``LC_ALL``,
``LC_MESSAGES``, ``LANG``; the first one set decides); any Chinese → 简体中文, anything
else English. Before the catalogues are compiled (a fresh checkout's first command)
the lines stay English.
"""

from __future__ import annotations

import gettext
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
SHELL_VARIABLES = ("OPENCLAW_LANGUAGE", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")
CHINESE = "zh_Hans"  # the catalogue's folder


def shell_language(environ: Mapping[str, str] | None = None) -> str | None:
    """The catalogue the shell asks for (``zh_Hans``), or None for English."""
    environ = os.environ if environ is None else environ
    for name in SHELL_VARIABLES:
        value = environ.get(name, "").strip()
        if not value:
            continue
        for part in value.split(":"):  # LANGUAGE may list several: zh_CN:en
            code = part.split(".")[0].split("@")[0].replace("-", "_").lower()
            if code == "zh" or code.startswith("zh_"):
                return CHINESE
            if code == "en" or code.startswith("en_"):
                return None
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
