"""What ``openclaw up`` does before it starts the servers: check the
environment, bring the database to the current schema, load the demo data,
make sure an administrator exists. Each failure becomes one clear line."""

from __future__ import annotations

import errno
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import DatabaseError, connection
from django.db.migrations.recorder import MigrationRecorder
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop
from kombu import Connection

from core.i18n import compile_catalogue

from .embedded import StartupError
from .speech import said


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(gettext_noop(
                    "port %(port)s on %(host)s is already in use; stop what uses it "
                    "or choose another with --port or OPENCLAW_PORT"), port=port, host=host) \
                    from None
            raise StartupError(gettext_noop("cannot listen on %(host)s:%(port)s (%(error)s)"),
                               host=host, port=port, error=exc.strerror) from None


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def check_database(settings_dict: dict, url: str) -> None:
    options = {k: v for k, v in settings_dict.get("OPTIONS", {}).items() if k != "pool"}
    try:
        with psycopg.connect(
            dbname=settings_dict["NAME"],
            user=settings_dict["USER"] or None,
            password=settings_dict["PASSWORD"] or None,
            host=settings_dict["HOST"] or None,
            port=settings_dict["PORT"] or None,
            connect_timeout=5,
            **options,
        ) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(gettext_noop(
            "cannot connect to the database in DATABASE_URL (%(url)s): %(error)s; "
            "check the URL, or unset DATABASE_URL to use the embedded PostgreSQL"),
            url=redact_url(url), error=reason) from None


def check_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except (redis.RedisError, ValueError) as exc:
        raise StartupError(gettext_noop(
            "cannot reach Redis at REDIS_URL (%(url)s): %(error)s; "
            "start Redis, fix the URL, or unset REDIS_URL to use the embedded one"),
            url=redact_url(url), error=exc) from None


def check_broker(url: str) -> None:
    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # kombu raises transport-specific errors
        raise StartupError(gettext_noop(
            "cannot reach the Celery broker at CELERY_BROKER_URL (%(url)s): %(error)s"),
            url=redact_url(url), error=exc) from None


def migrate() -> bool:
    """Bring the schema up to date; True when the database was empty before."""
    try:
        fresh = not MigrationRecorder(connection).applied_migrations()
        call_command("migrate", interactive=False, verbosity=0)
    except DatabaseError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(gettext_noop("database migrations failed: %(error)s"),
                           error=first) from None
    return fresh


def compile_catalogues(locale_dir: Path, say: Callable[[str], None]) -> list[Path]:
    """Build each ``.mo`` that is missing or older than its ``.po`` (a fresh checkout or
    a pull that changed a catalogue); GNU gettext is not needed. Returns those built."""
    built = []
    for po in sorted(locale_dir.glob("*/LC_MESSAGES/*.po")):
        mo = po.with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        try:
            compile_catalogue(po, mo)
        except OSError as exc:  # a read-only install: that language stays English
            say(said(gettext_noop("warning: cannot write %(file)s: %(error)s"),
                     {"file": mo, "error": exc.strerror}))
            continue
        built.append(mo)
    return built


def load_demo_fixtures(fixtures_dir: Path) -> list[str]:
    """Load every ``fixtures/*.json``, in name order."""
    names = sorted(p.name for p in fixtures_dir.glob("*.json"))
    for name in names:
        call_command("loaddata", str(fixtures_dir / name), verbosity=0)
    return names


def ensure_admin(username: str | None, password: str | None, say: Callable[[str], None]) -> None:
    """Create the administrator on first start; the generated password is said once."""
    user_model = get_user_model()
    if username is None:
        if user_model.objects.filter(is_superuser=True).exists():
            return
        username = "admin"
    user = user_model.objects.filter(username=username).first()
    if user is None:
        generated = not password
        password = password or secrets.token_urlsafe(12)
        user_model.objects.create_superuser(username=username, email="", password=password)
        if generated:
            say(_("created admin account %(name)r with password: %(password)s")
                % {"name": username, "password": password})
            say(_("(shown once; set OPENCLAW_ADMIN_PASSWORD to choose it)"))
        else:
            say(_("created admin account %(name)r (password from OPENCLAW_ADMIN_PASSWORD)")
                % {"name": username})
    elif password and not user.check_password(password):
        user.set_password(password)
        user.save(update_fields=["password"])
        say(_("admin account %(name)r: password reset from OPENCLAW_ADMIN_PASSWORD")
            % {"name": username})
