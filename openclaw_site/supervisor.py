"""A small process supervisor for ``openclaw up``: start the children, restart
one that dies (with a bound), and on SIGINT/SIGTERM stop them all, in order.

Each child runs in its own session (a terminal Ctrl-C reaches only us, so the
shutdown order is ours) and gets SIGTERM from the kernel if we are killed.
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

from .embedded import die_with_parent

logger = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)

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


class Supervisor:
    def __init__(self, children: list[Child], say: Callable[[str], None]):
        self.children = children
        self.say = say
        self.stopping = threading.Event()
        self.failure: str | None = None

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            self.stopping.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def start(self) -> None:
        for child in self.children:
            child.spawn()

    def watch(self, poll_s: float = 0.5) -> None:
        """Block until asked to stop, restarting children that exit on their own."""
        while not self.stopping.wait(poll_s):
            for child in self.children:
                if not child.alive():
                    self._restart(child)
            if self.failure:
                return

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
        child.restarts.append(now)
        self.say(f"{child.name} exited with code {code}; restarting")
        child.spawn()

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
                self.say(f"{child.name} did not stop in {timeout_s:.0f} s; killing it")
            child.signal_group(signal.SIGKILL)  # stragglers in its group, if any
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(5)
