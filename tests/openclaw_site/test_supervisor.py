"""The supervisor's restart policy. Servers are stood in for by two functions (which pid
answers now, start one), so the policy's timing is seen without a server's start-up;
children are real processes. The real servers killed under load: ``test_drills.py``."""

from __future__ import annotations

import logging
import time

import pytest

from openclaw_site import supervisor as supervisor_module
from openclaw_site.embedded import StartupError
from openclaw_site.supervisor import Child, Service, Supervisor


@pytest.fixture(autouse=True)
def no_reaping(monkeypatch):
    """Stand-in servers leave no orphans; the test process's own children are not ours."""
    monkeypatch.setattr(supervisor_module, "reap_orphans", lambda keep: None)


class StandIn:
    """A server whose process is a number: ``pid`` None is down."""

    def __init__(self, pid: int | None = 100, failures: int = 0):
        self.pid, self.failures, self.starts = pid, failures, []

    def start(self) -> None:
        self.starts.append(time.monotonic())
        if len(self.starts) <= self.failures:
            raise StartupError("disk full")
        self.pid = 100 + len(self.starts)

    def service(self) -> Service:
        return Service("Redis", lambda: self.pid, self.start)


def events(caplog) -> list[tuple[str, object]]:
    return [(r.event, getattr(r, "pid", None)) for r in caplog.records
            if r.name == "openclaw_site.supervisor"]


def watch_until(supervisor: Supervisor, done, limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not done():
        assert time.monotonic() < deadline
        for service in supervisor.services:
            supervisor._check_service(service)
        time.sleep(0.02)


def test_a_dead_server_is_restarted_at_once_and_both_are_logged(caplog):
    # given
    server = StandIn()
    supervisor = Supervisor([], say=lambda _: None, services=[server.service()])
    supervisor.start()

    # when
    server.pid = None
    died = time.monotonic()
    with caplog.at_level(logging.INFO, logger="openclaw_site.supervisor"):
        watch_until(supervisor, lambda: server.pid is not None)

    # then
    assert server.starts[0] - died < 0.1
    assert events(caplog) == [("down", 100), ("restarted", 101)]
    restarted = caplog.records[-1]
    assert restarted.service == "Redis" and restarted.attempt == 1


def test_a_failed_restart_is_tried_again_later_and_later(caplog):
    server = StandIn(failures=2)
    supervisor = Supervisor([], say=lambda _: None, services=[server.service()])
    supervisor.start()

    server.pid = None
    with caplog.at_level(logging.INFO, logger="openclaw_site.supervisor"):
        watch_until(supervisor, lambda: server.pid is not None)

    gaps = [b - a for a, b in zip(server.starts, server.starts[1:], strict=False)]
    assert len(server.starts) == 3
    assert 0.45 <= gaps[0] < 0.8 and 0.95 <= gaps[1] < 1.4, gaps
    assert [e for e, _ in events(caplog)] == [
        "down", "restart_failed", "restart_failed", "restarted"]


def test_a_server_another_command_restarted_is_adopted(caplog):
    server = StandIn()
    supervisor = Supervisor([], say=lambda _: None, services=[server.service()])
    supervisor.start()

    server.pid = 555  # died and was started again by a command between two looks
    with caplog.at_level(logging.INFO, logger="openclaw_site.supervisor"):
        watch_until(supervisor, lambda: supervisor.services[0].pid == 555)

    assert server.starts == []
    assert events(caplog) == [("adopted", 555)]


def test_a_child_that_keeps_dying_stops_up_after_backed_off_restarts(monkeypatch, caplog):
    monkeypatch.setattr(supervisor_module, "RESTART_DELAYS_S", (0.0, 0.05))
    child = Child("worker", ["/bin/sh", "-c", "exit 3"], env={})
    supervisor = Supervisor([child], say=lambda _: None)
    supervisor.start()

    with caplog.at_level(logging.INFO, logger="openclaw_site.supervisor"):
        supervisor.watch(poll_s=0.01)

    assert supervisor.failure is not None
    assert "worker exited 5 times" in supervisor.failure
    assert "last exit code 3" in supervisor.failure
    assert [e for e, _ in events(caplog)].count("restarted") == 5
