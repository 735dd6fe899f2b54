"""The ``openclaw`` command.

Process commands live here: ``up`` (everything on one machine), ``web``,
``worker`` and ``beat`` (one role each, for the distributed mode). Every other
subcommand is a Django management command (``openclaw migrate``, and the ones
later apps add), run against the same data folder: a running ``up``'s
embedded services are reused, otherwise they are started for the command and
stopped after it. A command aimed at a folder with no installation while an ``up``
runs on another one is refused (``guard``): it would make a second, empty
installation whose keys and data the running one never sees.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType

import django
from django.core.exceptions import ImproperlyConfigured
from django.core.management import execute_from_command_line
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from core.i18n import language_from_environment
from core.snapshot import bump_all

from .announce import admin_to_announce, announce, login_hint, url_host
from .backup import backup, restore
from .bootstrap import (
    check_broker,
    check_database,
    check_port_free,
    check_redis,
    compile_catalogues,
    ensure_admin,
    load_demo_fixtures,
    migrate,
)
from .children import become_subreaper, reap_orphans
from .embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    StartupError,
    embedded_services,
    ensure_writable_dir,
    take_up_lock,
    up_is_running,
)
from .guard import second_installation_refusal
from .instances import register, unregister
from .processes import beat_argv, child_env, web_argv, worker_argv
from .speech import said
from .supervisor import Child, Service, Supervisor

PROCESS_COMMANDS = ("up", "web", "worker", "beat")
DATA_COMMANDS = ("backup", "restore")
# Management commands that never touch the database: no embedded server is started
# for them, and they are never refused (`openclaw help` on a fresh machine).
NO_DATABASE_COMMANDS = {"help", "version", "makemessages", "compilemessages"}
DEFAULT_QUEUES = "default,cpu,batch,logs"  # logs: usage and audit writes
READY_TIMEOUT_S = 60


def say(message: str) -> None:
    sys.stdout.write(f"openclaw: {message}\n")
    sys.stdout.flush()


def fail(message: str) -> int:
    sys.stderr.write(f"openclaw: error: {message}\n")
    sys.stderr.flush()
    return 1


# --- argument parsing --------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openclaw",
        description="OpenClaw: LLM gateway, workflow engine and chat studio.",
        epilog="Any other command is a Django management command, e.g. `openclaw migrate`, "
        "`openclaw help` lists them.",
    )
    parser.add_argument(
        "--data-dir", help="data folder (default: OPENCLAW_DATA_DIR or the per-user data folder)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    up = sub.add_parser(
        "up", help="run everything on this machine (embedded services, web, worker, beat)"
    )
    _add_web_args(up)
    up.add_argument("--data-dir", dest="up_data_dir", help="data folder")
    up.add_argument("--concurrency", type=int, default=4, help="worker threads (default 4)")

    web = sub.add_parser("web", help="run the web server (uvicorn) only")
    _add_web_args(web)

    worker = sub.add_parser("worker", help="run a Celery worker only")
    worker.add_argument(
        "--queues",
        default=DEFAULT_QUEUES,
        help=f"comma-separated queues (default {DEFAULT_QUEUES}; GPU nodes: gpu)",
    )
    worker.add_argument(
        "--pool",
        choices=["threads", "solo"],
        default="threads",
        help="threads (default) or solo; never prefork once models are loaded",
    )
    worker.add_argument("--concurrency", type=int, default=4)

    sub.add_parser("beat", help="run Celery beat (the scheduler) only")

    backup = sub.add_parser("backup", help="write the whole database to FILE (pg_dump)")
    backup.add_argument("file", help="the backup file to write")
    restore = sub.add_parser("restore", help="replace the database with a backup FILE")
    restore.add_argument("file", help="a file `openclaw backup` wrote")
    restore.add_argument("--force", action="store_true",
                         help="replace a database that already holds tables")
    return parser


def _add_web_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=None, help="listen port (default OPENCLAW_PORT or 8000)"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    data_dir, rest = _pop_global_data_dir(argv)
    if data_dir:
        os.environ["OPENCLAW_DATA_DIR"] = str(Path(data_dir).expanduser().resolve())
    if not rest or rest[0] in {"-h", "--help"}:
        parser.print_help()
        return 0
    if uses_database(rest) and (refusal := second_installation_refusal()):
        return fail(refusal)
    if rest[0] not in PROCESS_COMMANDS + DATA_COMMANDS:
        return run_management_command(rest)
    args = parser.parse_args(rest)
    if getattr(args, "up_data_dir", None):
        os.environ["OPENCLAW_DATA_DIR"] = str(Path(args.up_data_dir).expanduser().resolve())
    try:
        return {"up": cmd_up, "web": cmd_web, "worker": cmd_worker, "beat": cmd_beat,
                "backup": cmd_backup, "restore": cmd_restore}[args.command](args)
    except StartupError as exc:
        return fail(said(exc.message, exc.params))
    except KeyboardInterrupt:
        return fail(said(gettext_noop("interrupted")))


def _pop_global_data_dir(argv: list[str]) -> tuple[str | None, list[str]]:
    if argv and argv[0].startswith("--data-dir"):
        if "=" in argv[0]:
            return argv[0].split("=", 1)[1], argv[1:]
        if len(argv) > 1:
            return argv[1], argv[2:]
    return None, argv


def uses_database(argv: list[str]) -> bool:
    """Whether ``openclaw ARGV`` reads or writes the data folder's database (a process
    command checks its services itself; asking for help needs none)."""
    return (argv[0] not in PROCESS_COMMANDS and argv[0] not in NO_DATABASE_COMMANDS
            and not {"-h", "--help"} & set(argv))


def _port(args: argparse.Namespace) -> int:
    if args.port is not None:
        return args.port
    raw = os.environ.get("OPENCLAW_PORT", "8000")
    try:
        return int(raw)
    except ValueError:
        raise StartupError(gettext_noop("OPENCLAW_PORT=%(value)r is not a port number"),
                           value=raw) from None


# --- settings, loaded only after the data folder is known to be usable ------


def load_settings() -> ModuleType:
    """Check the data folder, then import settings; returns the settings module."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openclaw_site.settings")
    data_dir = os.environ.get("OPENCLAW_DATA_DIR")
    if data_dir:
        ensure_writable_dir(Path(data_dir))
    try:
        module = importlib.import_module(os.environ["DJANGO_SETTINGS_MODULE"])
    except ImproperlyConfigured as exc:
        raise StartupError(str(exc)) from None
    ensure_writable_dir(module.DATA_DIR)
    return module


def setup_django() -> None:
    """Django, answering in the shell's language from here on (``LANG=zh_CN.UTF-8`` or
    ``OPENCLAW_LANGUAGE=zh-hans``; English otherwise)."""
    django.setup()
    translation.activate(language_from_environment())


SCHEMA_COMMANDS = {"migrate", "makemigrations", "showmigrations", "sqlmigrate", "squashmigrations",
                   "help", "check", "version", "shell", "dbshell", "flush",
                   "makemessages", "compilemessages"}  # catalogues need no database


def run_management_command(argv: list[str]) -> int:
    try:
        settings_module = load_settings()
        if not uses_database(argv):
            setup_django()
            execute_from_command_line(["openclaw", *argv])
            return 0
        with embedded_services(settings_module):
            setup_django()
            if argv[0] not in SCHEMA_COMMANDS:
                _ensure_schema(settings_module)
            execute_from_command_line(["openclaw", *argv])
    except StartupError as exc:
        return fail(said(exc.message, exc.params))
    return 0


def _ensure_schema(settings_module: ModuleType) -> None:
    """A command on a data folder `up` never prepared: migrate the embedded database
    first; an external one is the operator's to migrate."""
    executor = MigrationExecutor(connection)
    if not executor.migration_plan(executor.loader.graph.leaf_nodes()):
        return
    if not settings_module.EMBEDDED_DATABASE:
        raise StartupError(gettext_noop(
            "the database schema is not up to date; run `openclaw migrate`"))
    migrate()
    updated = said(gettext_noop("database schema created/updated"))
    sys.stderr.write(f"openclaw: {updated}\n")


# --- up -----------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    port = _port(args)
    started = time.monotonic()
    settings_module = load_settings()
    check_port_free(args.host, port)
    lock = take_up_lock(settings_module.DATA_DIR, port=port, embedded=[
        name for name, embedded in (("postgres", settings_module.EMBEDDED_DATABASE),
                                    ("redis", settings_module.EMBEDDED_REDIS)) if embedded])
    become_subreaper()  # the postmaster outlives pg_ctl: reap it (and its backends) here
    base = f"http://{url_host(args.host)}:{port}"
    entry = register(settings_module.DATA_DIR, port=port, url=base)  # for other commands
    pg = redis = None
    try:
        _check_external_services(settings_module)
        pg, redis = _start_embedded(settings_module)
        login = _prepare_database(settings_module)
        return _run_servers(args, base, settings_module, started, _services(pg, redis), login)
    finally:
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()
        reap_orphans(set())
        unregister(entry)
        os.close(lock)


def _check_external_services(settings_module: ModuleType) -> None:
    if not settings_module.EMBEDDED_DATABASE:
        check_database(settings_module.DATABASES["default"], settings_module.DATABASE_URL)
    if not settings_module.EMBEDDED_REDIS:
        check_redis(settings_module.REDIS_URL)
    broker = settings_module.CELERY_BROKER_URL
    if not broker.startswith(("redis", "unix")):
        check_broker(broker)


def _start_embedded(
        settings_module: ModuleType) -> tuple[EmbeddedPostgres | None, EmbeddedRedis | None]:
    """Start (or adopt) the embedded services; ``up`` owns them until it exits."""
    pg = redis = None
    try:
        if settings_module.EMBEDDED_DATABASE:
            pg = EmbeddedPostgres(settings_module.EMBEDDED_PG_DIR, settings_module.EMBEDDED_DB_NAME)
            pg.start()
            pg.started_here = True  # adopt one a finished command left running
            say(said(gettext_noop("embedded PostgreSQL + pgvector ready (socket in "
                                  "%(folder)s)"), {"folder": pg.pgdata}))
        if settings_module.EMBEDDED_REDIS:
            redis = EmbeddedRedis(settings_module.EMBEDDED_REDIS_DIR)
            redis.start(tie_to_parent=True)
            redis.started_here = True
            say(said(gettext_noop("embedded Redis ready (%(socket)s)"),
                     {"socket": redis.socket_path}))
    except BaseException:
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()
        raise
    return pg, redis


def _services(pg: EmbeddedPostgres | None, redis: EmbeddedRedis | None) -> list[Service]:
    """The embedded servers the supervisor watches and restarts (Redis tied to ``up``
    again, like the first one)."""
    services = []
    if pg is not None:
        services.append(Service("PostgreSQL", pg.postmaster_pid, pg.start))
    if redis is not None:
        services.append(Service("Redis", redis.running_pid,
                                lambda: redis.start(tie_to_parent=True)))
    return services


def _prepare_database(settings_module: ModuleType) -> str:
    """Migrate, load the demo data once, make the admin; returns how to log in."""
    compile_catalogues(settings_module.BASE_DIR / "locale", say)  # the zh-hans .mo files
    setup_django()
    if migrate():  # first start of this database: load the demo data once
        loaded = load_demo_fixtures(settings_module.BASE_DIR / "fixtures")
        if loaded:
            say(_("demo data loaded: %(files)s") % {"files": ", ".join(loaded)})
    username = os.environ.get("OPENCLAW_ADMIN_USER") or None
    password = os.environ.get("OPENCLAW_ADMIN_PASSWORD") or None
    name, existed = admin_to_announce(username)
    ensure_admin(username, password, say)
    connections.close_all()
    return login_hint(name, existed, password is not None)


def _run_servers(args: argparse.Namespace, base: str, settings_module: ModuleType,
                 started: float, services: list[Service], login: str) -> int:
    env = child_env(settings_module)
    level = settings_module.LOG_LEVEL
    children = [
        Child("web", web_argv(args.host, _port(args)), env),
        Child("worker", worker_argv(DEFAULT_QUEUES, "threads", args.concurrency, "embedded@%h",
                                    level), env),
        Child("beat", beat_argv(settings_module.CELERY_BEAT_SCHEDULE_FILENAME, level), env),
    ]
    supervisor = Supervisor(children, say, services)
    supervisor.install_signal_handlers()
    supervisor.start()
    try:
        if _wait_ready(base, supervisor):
            announce(say, base, time.monotonic() - started, login, settings_module.DATA_DIR)
            supervisor.watch()
    finally:
        say(_("stopping…"))
        supervisor.stop()
    if supervisor.failure:
        return fail(supervisor.failure)
    say(_("stopped"))
    return 0


def _wait_ready(base: str, supervisor) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and not supervisor.stopping.is_set():
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        if not supervisor.children[0].alive():
            supervisor.failure = "the web server exited during start-up; see its output above"
            return False
        supervisor.stopping.wait(0.2)
    if not supervisor.stopping.is_set():
        supervisor.failure = f"not ready after {READY_TIMEOUT_S} s ({base}/readyz)"
    return False


# --- single roles (distributed mode) -----------------------------------------------


def _require_services(settings_module: ModuleType) -> None:
    """Single roles never start embedded services: `up` (or the operator) owns them."""
    if (
        settings_module.EMBEDDED_DATABASE
        and EmbeddedPostgres(settings_module.EMBEDDED_PG_DIR).running_pid() is None
    ):
        raise StartupError(gettext_noop(
            "no database: set DATABASE_URL, or run `openclaw up` for the data folder "
            "%(folder)s"), folder=settings_module.DATA_DIR)
    if (
        settings_module.EMBEDDED_REDIS
        and not EmbeddedRedis(settings_module.EMBEDDED_REDIS_DIR).ping()
    ):
        raise StartupError(gettext_noop(
            "no Redis: set REDIS_URL, or run `openclaw up` for the data folder %(folder)s"),
            folder=settings_module.DATA_DIR)
    _check_external_services(settings_module)


def _exec(argv: list[str], settings_module: ModuleType) -> int:
    os.execve(argv[0], argv, child_env(settings_module))
    return 0  # not reached


def cmd_web(args: argparse.Namespace) -> int:
    settings_module = load_settings()
    port = _port(args)
    check_port_free(args.host, port)
    _require_services(settings_module)
    return _exec(web_argv(args.host, port), settings_module)


def cmd_worker(args: argparse.Namespace) -> int:
    settings_module = load_settings()
    _require_services(settings_module)
    argv = worker_argv(args.queues, args.pool, args.concurrency,
                       f"{args.queues.split(',')[0]}-{os.getpid()}@%h", settings_module.LOG_LEVEL)
    return _exec(argv, settings_module)


def cmd_beat(args: argparse.Namespace) -> int:
    settings_module = load_settings()
    _require_services(settings_module)
    return _exec(beat_argv(settings_module.CELERY_BEAT_SCHEDULE_FILENAME,
                           settings_module.LOG_LEVEL), settings_module)



# --- backup and restore ---------------------------------------------------------------------


def _keys_source(settings_module: ModuleType) -> str:
    if os.environ.get("OPENCLAW_ENCRYPTION_KEYS", "").strip():
        return "now set in the environment"
    return f"or copy the original {settings_module.DATA_DIR / 'encryption_keys'}"


def cmd_backup(args: argparse.Namespace) -> int:
    settings_module = load_settings()
    with embedded_services(settings_module):
        setup_django()
        manifest = backup(Path(args.file), settings_module.DATABASES["default"],
                          settings_module.ENCRYPTION_KEYS)
    keys = ", ".join(manifest["encryption_keys"]) or "none"
    say(_("backup written to %(file)s (encryption keys in use: %(keys)s)")
        % {"file": Path(args.file).resolve(), "keys": keys})
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    settings_module = load_settings()
    if settings_module.EMBEDDED_DATABASE and up_is_running(settings_module.DATA_DIR):
        raise StartupError(gettext_noop("`openclaw up` is running on this data folder; stop "
                                        "it, restore, then start it again"))
    with embedded_services(settings_module):
        setup_django()
        manifest, tables = restore(Path(args.file), settings_module.DATABASES["default"],
                                   settings_module.ENCRYPTION_KEYS,
                                   _keys_source(settings_module), force=args.force)
        bump_all()  # running processes reload the registry, rules, keys, plugins, workflows
    say(_("restored %(tables)d tables from the backup made %(created)s")
        % {"tables": tables, "created": manifest["created_at"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
