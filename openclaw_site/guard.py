"""The refusal that keeps a command from making a second installation by mistake:
``openclaw up --data-dir D`` runs, the user types ``openclaw keys create …`` without
``--data-dir``, and the command would otherwise set up a fresh, empty database in the
default folder and print a key the running server has never heard of.

Said before settings load (loading them writes keys into the data folder), so the
line is translated with Django's catalogues but none of the project's settings."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import django
from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext as _

from core.i18n import language_from_environment

from .instances import data_dir_in_use, instances_elsewhere

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"


def second_installation_refusal() -> str | None:
    """Why a command must not run on the data folder it would use — that folder has no
    installation while an ``up`` runs on another one — in one line naming that one and
    how to reach it; None when it may go on (its folder has an ``up`` or an
    installation, nothing else runs, or the database is external)."""
    if os.environ.get("DATABASE_URL", "").strip():
        return None  # an external database: the folder holds no installation
    folder = data_dir_in_use()
    running = instances_elsewhere(folder)
    if not running:
        return None
    _activate_language_without_settings()
    target = shlex.quote(str(running[0].data_dir))
    return _("%(folder)s has no OpenClaw installation, but `openclaw up` is running for "
             "%(running)s; to use it, add --data-dir %(target)s or set "
             "OPENCLAW_DATA_DIR=%(target)s (nothing was created)") % {
        "folder": folder, "target": target,
        "running": ", ".join(f"{i.data_dir} ({i.url}, pid {i.pid})" for i in running)}


def _activate_language_without_settings() -> None:
    """The shell's language with Django's defaults and the project's catalogues only; the
    process says its line and exits."""
    if not settings.configured:
        settings.configure(USE_I18N=True, LOCALE_PATHS=[LOCALE_DIR])
        django.setup()
    translation.activate(language_from_environment())
