"""What ``openclaw up`` tells its user once everything answers: where the studio is
and how to log in first, then the admin, the API and the operator's endpoints, each
with a few words on what it is for (in the shell's language)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from django.contrib.auth import get_user_model
from django.utils.translation import gettext as _
from django.utils.translation import pgettext

from .instances import default_data_dir

LABEL_WIDTH = 10


def url_host(host: str) -> str:
    """The host part of a URL that reaches a server listening on ``host``."""
    if host in {"0.0.0.0", "::", ""}:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def admin_to_announce(username: str | None) -> tuple[str, bool]:
    """Before ``ensure_admin``: the account the studio line names (the one
    ``OPENCLAW_ADMIN_USER`` names, else the first superuser, else the ``admin`` about
    to be made) and whether it exists already."""
    users = get_user_model().objects
    name = username or users.filter(is_superuser=True).order_by("pk").values_list(
        "username", flat=True).first() or "admin"
    return name, users.filter(username=name).exists()


def login_hint(username: str, existed: bool, password_from_env: bool) -> str:
    """How to log in to the studio, matching what ``ensure_admin`` just said."""
    if password_from_env:
        return _("log in as %(user)s with the password in OPENCLAW_ADMIN_PASSWORD") % {
            "user": username}
    if not existed:
        return _("log in as %(user)s with the password shown above") % {"user": username}
    return _("log in as %(user)s; its password was shown when it was created, and "
             "`openclaw changepassword %(user)s` sets a new one") % {"user": username}


def announce(say: Callable[[str], None], base: str, elapsed: float, login: str,
             data_dir: Path) -> None:
    say(_("ready in %(seconds).1f s") % {"seconds": elapsed})
    rows = [
        (pgettext("openclaw up", "studio"), f"{base}/studio/", login),
        (pgettext("openclaw up", "admin"), f"{base}/admin/",
         _("models, routing rules, API keys, plugins")),
        (pgettext("openclaw up", "api"), f"{base}/v1",
         _("OpenAI-compatible; `openclaw keys create` makes a key")),
        (pgettext("openclaw up", "metrics"), f"{base}/metrics", _("Prometheus")),
        (pgettext("openclaw up", "health"), f"{base}/healthz", ""),
        (pgettext("openclaw up", "readiness"), f"{base}/readyz", ""),
    ]
    for label, url, note in rows:
        say(f"  {label:<{LABEL_WIDTH}} {url}" + (f"  ({note})" if note else ""))
    if data_dir != default_data_dir():
        folder = shlex.quote(str(data_dir))
        say(_("other openclaw commands reach this instance with --data-dir %(folder)s "
              "(or OPENCLAW_DATA_DIR=%(folder)s)") % {"folder": folder})
    say(_("press Ctrl-C to stop"))
