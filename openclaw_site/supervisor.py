"""A small process supervisor for ``openclaw up``: start the children, watch them and
the embedded servers, restart whichever dies (with backoff), and on SIGINT/SIGTERM
stop them all, in order.

Each child runs in its own session (a terminal Ctrl-C reaches only us, so the
shutdown order is ours) and gets SIGTERM from the kernel if we are killed. An
embedded server (PostgreSQL, Redis) is watched by the pid it answers for, not as a
child: the postmaster is ``pg_ctl``'s, and one a command restarted while we were
not looking is adopted. Every restart is logged (JSON, like the rest).

Backoff: the first restart is immediate (a crash is usually a one-off, and clients
are waiting), the next ones wait longer and longer (``RESTART_DELAYS_S``). A child
that dies ``MAX_RESTARTS`` times within ``RESTART_WINDOW_S`` stops ``up`` (it is
broken, not unlucky); a server is tried again every 30 s at most for as long as
``up`` runs, because the web server keeps answering what it can meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .children import StartupError, die_with_parent, gettext_noop, reap_orphans
from .speech import said

logger = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
RESTART_DELAYS_S = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_AFTER_S = 60.0  # a server up this long since its restart starts afresh
POLL_S = 0.25
REAP_EVERY_S = 5.0


def restart_delay(attempt: int) -> float:
    """Seconds before restart number ``attempt`` (0: the first) of a crash series."""
    return RESTART_DELAYS_S[min(attempt, len(RESTART_DELAYS_S) - 1)]


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)
    died_at: float | None = None

    def spawn(self) -> None:
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, signum: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)


@dataclass
class Service:
    """An embedded server ``up`` owns: ``current_pid`` says which process answers for
    it now (None: down), ``start`` brings it back (clearing what a crash left)."""

    name: str
    current_pid: Callable[[], int | None]
    start: Callable[[], None]
    pid: int | None = None
    attempts: int = 0
    up_since: float = field(default_factory=time.monotonic)
    down_since: float | None = None
    next_try: float = 0.0


class Supervisor:
    def __init__(self, children: list[Child], say: Callable[[str], None],
                 services: list[Service] | None = None):
        self.children = children
        self.services = services or []
        self.say = say
        self.stopping = threading.Event()
        self.failure: str | None = None
        self._reaped_at = time.monotonic()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            self.stopping.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def start(self) -> None:
        for service in self.services:
            service.pid = service.current_pid()
        for child in self.children:
            child.spawn()

    def watch(self, poll_s: float = POLL_S) -> None:
        """Block until asked to stop, restarting servers and children that die.
        Runs in the main thread: a child's parent-death signal follows the thread
        that started it."""
        while not self.stopping.wait(poll_s):
            for service in self.services:
                self._check_service(service)
            for child in self.children:
                if not child.alive():
                    self._restart(child)
            if self.failure:
                return
            if time.monotonic() - self._reaped_at > REAP_EVERY_S:
                self.reap()

    def reap(self) -> None:
        """Reap dead orphans handed to us (``up`` is a subreaper): a killed
        postmaster and its backends."""
        reap_orphans({c.pid for c in self.children if c.pid is not None})
        self._reaped_at = time.monotonic()

    # --- embedded servers ---------------------------------------------------------

    def _check_service(self, service: Service) -> None:
        now = time.monotonic()
        pid = service.current_pid()
        if pid is not None:
            if pid != service.pid:  # restarted by a command while we were not looking
                logger.warning("embedded %s is running as pid %s (started by another "
                               "command); adopted", service.name, pid,
                               extra={"service": service.name, "pid": pid, "event": "adopted"})
                service.pid, service.down_since, service.up_since = pid, None, now
            if service.attempts and now - service.up_since > STABLE_AFTER_S:
                service.attempts = 0
            return
        if service.down_since is None:
            service.down_since = now
            service.next_try = max(now, service.up_since + restart_delay(service.attempts))
            logger.error("embedded %s (pid %s) is down; restarting it in %.1f s",
                         service.name, service.pid, service.next_try - now,
                         extra={"service": service.name, "pid": service.pid, "event": "down",
                                "attempt": service.attempts + 1})
        if now >= service.next_try:
            self._restart_service(service)

    def _restart_service(self, service: Service) -> None:
        self.reap()  # the dead server's processes, so their pids answer no more
        started = time.monotonic()
        service.attempts += 1
        try:
            service.start()
        except StartupError as exc:
            delay = restart_delay(service.attempts)
            service.next_try = time.monotonic() + delay
            logger.error("embedded %s did not restart: %s; next try in %.1f s",
                         service.name, exc, delay,
                         extra={"service": service.name, "event": "restart_failed",
                                "attempt": service.attempts})
            return
        now = time.monotonic()
        down_s = now - (service.down_since or started)
        service.pid, service.up_since, service.down_since = service.current_pid(), now, None
        logger.warning("embedded %s restarted as pid %s in %.2f s (down %.2f s)",
                       service.name, service.pid, now - started, down_s,
                       extra={"service": service.name, "pid": service.pid, "event": "restarted",
                              "attempt": service.attempts,
                              "restart_s": round(now - started, 3), "down_s": round(down_s, 3)})

    # --- children -------------------------------------------------------------------

    def _restart(self, child: Child) -> None:
        code = child.process.returncode if child.process else None
        now = time.monotonic()
        child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW_S]
        if len(child.restarts) >= MAX_RESTARTS:
            self.failure = (
                f"{child.name} exited {MAX_RESTARTS} times within {RESTART_WINDOW_S:.0f} s "
                f"(last exit code {code}); see its output above"
            )
            return
        if child.died_at is None:
            child.died_at = now
            delay = restart_delay(len(child.restarts))
            logger.error("%s (pid %s) exited with code %s; restarting it in %.1f s",
                         child.name, child.pid, code, delay,
                         extra={"service": child.name, "pid": child.pid, "exit_code": code,
                                "event": "down", "attempt": len(child.restarts) + 1})
        if now < child.died_at + restart_delay(len(child.restarts)):
            return
        child.restarts.append(now)
        child.died_at = None
        child.spawn()
        logger.warning("%s restarted as pid %s", child.name, child.pid,
                       extra={"service": child.name, "pid": child.pid, "event": "restarted",
                              "attempt": len(child.restarts)})

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every child's process group, then SIGKILL whatever is left."""
        for child in self.children:
            if child.alive():
                child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(said(gettext_noop("%(name)s did not stop in %(seconds).0f s; killing it"),
                              {"name": child.name, "seconds": timeout_s}))
            child.signal_group(signal.SIGKILL)  # stragglers in its group, if any
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(5)
