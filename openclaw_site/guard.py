"""The refusal that keeps a command from making a second installation by mistake:
``openclaw up --data-dir D`` runs, the user types ``openclaw keys create …`` without
``--data-dir``, and the command would otherwise set up a fresh, empty database in the
default folder and print a key the running server has never heard of.

Said before settings load (loading them writes keys into the data folder): the line
comes in the shell's language from the compiled catalogue (``speech``)."""

from __future__ import annotations

import os
import shlex

from .children import gettext_noop
from .instances import data_dir_in_use, instances_elsewhere
from .speech import said


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
    target = shlex.quote(str(running[0].data_dir))
    return said(gettext_noop(
        "%(folder)s has no OpenClaw installation, but `openclaw up` is running for "
        "%(running)s; to use it, add --data-dir %(target)s or set "
        "OPENCLAW_DATA_DIR=%(target)s (nothing was created)"), {
        "folder": folder, "target": target,
        "running": ", ".join(f"{i.data_dir} ({i.url}, pid {i.pid})" for i in running)})
