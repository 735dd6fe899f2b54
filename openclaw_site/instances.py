"""Which ``openclaw up`` instances run on this machine, so that a command finds the
installation its user means instead of quietly making a second one.

Each ``up`` registers itself (data folder, pid, port, URL) in a per-user registry,
one small JSON file per data folder under the user's state folder
(``~/.local/state/openclaw/instances``), and removes it when it exits. An entry whose
``up`` is gone — its pid dead, or its data folder's lock (``embedded.running_up``)
no longer held by that pid, as after a ``kill -9`` — is stale: ignored, and cleared
by the next reader. Nothing here imports Django: the command line asks before
settings load, because loading them writes keys into the data folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_data_dir, user_state_dir

from .children import process_alive
from .embedded import running_up

logger = logging.getLogger(__name__)

APP = "openclaw"


@dataclass(frozen=True)
class Instance:
    """A running ``openclaw up``, as it registered itself."""

    data_dir: Path
    pid: int
    port: int
    url: str


def default_data_dir() -> Path:
    """The per-user data folder (the same as ``settings.DATA_DIR`` without
    ``OPENCLAW_DATA_DIR``)."""
    return Path(user_data_dir(APP, appauthor=False)).expanduser().resolve()


def data_dir_in_use(environ: dict[str, str] | None = None) -> Path:
    """The data folder a command run now would use."""
    environ = dict(os.environ) if environ is None else environ
    chosen = environ.get("OPENCLAW_DATA_DIR", "").strip()
    return Path(chosen).expanduser().resolve() if chosen else default_data_dir()


def registry_dir() -> Path:
    return Path(user_state_dir(APP, appauthor=False)) / "instances"


def _entry_path(data_dir: Path) -> Path:
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return registry_dir() / f"{digest}.json"


def register(data_dir: Path, *, port: int, url: str) -> Path | None:
    """Record this process as the ``up`` of ``data_dir``; returns the entry to remove
    when it exits. Written whole (a reader never sees half an entry). A registry that
    cannot be written (a read-only home) costs only the lookup: logged, not fatal."""
    path = _entry_path(data_dir)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    entry = {"data_dir": str(data_dir), "pid": os.getpid(), "port": port, "url": url}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(entry, handle)
        os.replace(partial, path)
    except OSError as exc:
        logger.warning("cannot register this instance in %s (%s); commands without "
                       "--data-dir will not find it", path.parent, exc.strerror)
        return None
    return path


def unregister(path: Path | None) -> None:
    """Remove this process's entry (not one a later ``up`` of the folder wrote)."""
    if path is None:
        return
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def _read(path: Path) -> Instance | None:
    try:
        entry = json.loads(path.read_text())
        return Instance(Path(entry["data_dir"]), int(entry["pid"]), int(entry["port"]),
                        str(entry["url"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(instance: Instance) -> bool:
    if not process_alive(instance.pid):
        return False
    up = running_up(instance.data_dir)
    return up is not None and up.get("pid") == instance.pid


def running_instances() -> list[Instance]:
    """The ``up`` instances running for this user now, stale entries cleared."""
    found = []
    for path in sorted(registry_dir().glob("*.json")):
        instance = _read(path)
        if instance is not None and _alive(instance):
            found.append(instance)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return found


def has_installation(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds an embedded database already (``up`` or a command
    has run on it)."""
    return (data_dir / "postgres" / "PG_VERSION").exists()


def instances_elsewhere(data_dir: Path) -> list[Instance]:
    """The running instances a command on ``data_dir`` would miss: none when ``data_dir``
    has its own ``up`` or an installation already; else every ``up`` running on
    another folder (using ``data_dir`` would make a second, empty installation)."""
    if running_up(data_dir) is not None or has_installation(data_dir):
        return []
    return [i for i in running_instances() if i.data_dir != data_dir]
