"""The processes ``up`` and the embedded services start, and what they leave behind:
children that die with their parent, orphans adopted (subreaper) and reaped, a zombie
counted as dead, and the lock that makes "is it running? start it" one step across
processes. Nothing here imports Django."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

START_LOCK_TIMEOUT_S = 90  # another process's start (pg_ctl -t 30, crash recovery)


def gettext_noop(message: str) -> str:
    """Marks ``message`` for the catalogues (``makemessages`` knows the name) without
    translating it: ``StartupError`` messages are said in the shell's language where
    they are printed (``openclaw_site.speech``)."""
    return message


class StartupError(Exception):
    """A problem the user can fix; the message says what and how. ``message`` is an
    English sentence marked with ``gettext_noop``, its ``%(name)s`` placeholders filled
    from ``params``; ``str()`` is the English text, ``speech.said(exc.message,
    exc.params)`` the user's language."""

    def __init__(self, message: str, **params: object):
        self.message, self.params = message, params
        super().__init__(message % params if params else message)


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM if the process that started it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def become_subreaper() -> None:
    """Orphaned descendants (the postmaster once ``pg_ctl`` exits, a killed server's
    leftover processes) become our children rather than init's, so ``up`` can reap
    them: where PID 1 reaps nothing (a container without an init), a dead server would
    otherwise linger as a zombie whose pid still answers ``kill(pid, 0)``."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER


def process_alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie (dead, not yet reaped) counts as dead."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def reap_orphans(keep: set[int]) -> None:
    """Reap our dead children that no ``Popen`` owns (the pids in ``keep`` are left to
    their ``Popen``, which wants the exit code)."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children():
            if child.pid in keep:
                continue
            with contextlib.suppress(psutil.Error, ChildProcessError):
                if child.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(child.pid, os.WNOHANG)


@contextlib.contextmanager
def start_lock(folder: Path) -> Iterator[None]:
    """Held while a process checks whether a service of ``folder`` runs and starts it,
    so ``up``'s supervisor and a command started meanwhile never start it twice."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder.parent / f".{folder.name}.start.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + START_LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StartupError(gettext_noop(
                        "another process has been starting the service in %(folder)s for "
                        "%(seconds)d s; see its log there"),
                        folder=folder, seconds=START_LOCK_TIMEOUT_S) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock
