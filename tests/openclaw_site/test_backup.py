"""`openclaw backup` of a running embedded instance and `openclaw restore` into fresh
data folders, as an operator runs them: real subprocesses, the embedded PostgreSQL +
pgvector, pg_dump / pg_restore, a LangGraph checkpoint, encrypted credentials, an
imported conversation and a long-term memory."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from core.crypto import new_key_spec
from openclaw_site.embedded import EmbeddedPostgres
from tests.openclaw_site.test_up import OPENCLAW, clean_env, free_port, start_up, wait_ready

pytestmark = pytest.mark.slow

MODELS_YAML = """\
models:
  - name: backed-up-model
    type: remote
    endpoint: http://127.0.0.1:9/v1
    model: upstream-name
    auth: {type: api_key, key: $BACKUP_TEST_SECRET}
"""
CREDENTIAL = "sk-backup-test-credential-1234"
THREAD = {"configurable": {"thread_id": "backup-thread", "checkpoint_ns": ""}}
SESSION = {"session_id": "0b7e3c9a-5f3e-4a51-9a3f-2d6c1e8b4f70",
           "messages": [{"role": "user", "content": "back this conversation up",
                         "timestamp": "2026-11-24T10:00:00+00:00"},
                        {"role": "assistant", "content": "it is kept, encrypted",
                         "timestamp": "2026-11-24T10:00:01+00:00"}],
           "context_vectors": []}
REMEMBER = ("from django.contrib.auth import get_user_model; "
            "from chat.models import MemoryItem; "
            "MemoryItem.objects.create(owner=get_user_model().objects.get(username='admin'), "
            "user='admin', text='a memory to keep', embedding=[0.01] * 384)")
# The imported conversation may be remembered too (by the worker, in the background):
# the memory written here is found by its text (encrypted, so compared in Python).
RECALL = ("from chat.models import MemoryItem; "
          "m = next(m for m in MemoryItem.objects.all() if m.text == 'a memory to keep'); "
          "print(m.text, '|', len(m.embedding))")


@pytest.fixture
def folders():
    made = [Path(tempfile.mkdtemp(prefix="ocbk-")) for _ in range(4)]
    yield made
    for folder in made:
        pg = EmbeddedPostgres(folder / "postgres")
        if pg.running_pid() is not None:
            pg.started_here = True
            pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


def openclaw(data_dir: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*OPENCLAW, "--data-dir", str(data_dir), *args], env=env,
                          capture_output=True, text=True, timeout=180)


def connect(data_dir: Path, **kwargs) -> psycopg.Connection:
    return psycopg.connect(EmbeddedPostgres(data_dir / "postgres").uri(), autocommit=True,
                           **kwargs)


def write_checkpoint(data_dir: Path) -> None:
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.postgres import PostgresSaver

    with connect(data_dir, prepare_threshold=0, row_factory=dict_row) as conn:
        saver = PostgresSaver(conn)
        saver.setup()
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"messages": ["remember the backup"]}
        checkpoint["channel_versions"] = {"messages": 1}
        saver.put(THREAD, checkpoint, {"source": "input", "step": 1}, {"messages": 1})
        conn.execute("CREATE TABLE memory_probe (id int PRIMARY KEY, embedding vector(3))")
        conn.execute("INSERT INTO memory_probe VALUES (1, '[0.5,0.25,1]')")


def read_checkpoint_and_vector(data_dir: Path) -> tuple[dict, str]:
    from langgraph.checkpoint.postgres import PostgresSaver

    pg = EmbeddedPostgres(data_dir / "postgres")
    pg.start()
    try:
        with connect(data_dir, prepare_threshold=0, row_factory=dict_row) as conn:
            saved = PostgresSaver(conn).get_tuple(THREAD)
            vector = conn.execute("SELECT embedding::text AS v FROM memory_probe").fetchone()
        return saved.checkpoint["channel_values"], vector["v"]
    finally:
        pg.stop()


def public_tables(data_dir: Path) -> int:
    pg = EmbeddedPostgres(data_dir / "postgres")
    pg.start()
    try:
        with connect(data_dir) as conn:
            return conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                                ).fetchone()[0]
    finally:
        pg.stop()


def test_backup_of_a_running_instance_restores_into_a_fresh_data_folder(folders):
    source, target, wrong_key, _spare = folders
    keys = new_key_spec("k7")
    env = clean_env(OPENCLAW_ENCRYPTION_KEYS=keys, BACKUP_TEST_SECRET=CREDENTIAL)
    backup_file = source / "backups" / "openclaw.backup"
    models_file = source / "models.yaml"
    models_file.write_text(MODELS_YAML)
    port = free_port()
    process = start_up(source, port, env)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        # given: a registry entry with an encrypted credential, an API key, a LangGraph
        # checkpoint and a pgvector table, in the running instance
        assert openclaw(source, "config", "apply", str(models_file), env=env).returncode == 0
        created = openclaw(source, "keys", "create", "--name", "backed-up-key", "--json",
                           env=env)
        assert created.returncode == 0, created.stderr
        prefix = json.loads(created.stdout)["prefix"]
        write_checkpoint(source)
        session_file = source / "session.json"
        session_file.write_text(json.dumps(SESSION))
        imported = openclaw(source, "conversations", "import", str(session_file), "--user",
                            "admin", env=env)
        assert imported.returncode == 0, imported.stderr
        remembered = openclaw(source, "shell", "-c", REMEMBER, env=env)
        assert remembered.returncode == 0, remembered.stderr

        # when: backed up while it runs
        made = openclaw(source, "backup", str(backup_file), env=env)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    assert made.returncode == 0, made.stderr
    assert "encryption keys in use: k7" in made.stdout
    assert backup_file.stat().st_mode & 0o777 == 0o600

    # and restored into a fresh data folder holding the same key
    restored = openclaw(target, "restore", str(backup_file), env=env)
    assert restored.returncode == 0, restored.stderr

    # then: registry, credential (decrypted), key, checkpoint and vector are intact
    listed = openclaw(target, "models", "list", "--json", env=env)
    assert "backed-up-model" in listed.stdout, listed.stderr
    shell = openclaw(target, "shell", "-c",
                     "from routing.models import ModelEndpoint; "
                     "print(ModelEndpoint.objects.get(name='backed-up-model').api_key)", env=env)
    assert shell.stdout.strip().splitlines()[-1] == CREDENTIAL, shell.stderr
    assert prefix in openclaw(target, "keys", "list", env=env).stdout
    assert read_checkpoint_and_vector(target) == ({"messages": ["remember the backup"]},
                                                  "[0.5,0.25,1]")
    exported = openclaw(target, "conversations", "export", SESSION["session_id"], env=env)
    assert exported.returncode == 0, exported.stderr
    assert [m["content"] for m in json.loads(exported.stdout)["messages"]] == [
        m["content"] for m in SESSION["messages"]]
    memories = openclaw(target, "shell", "-c", RECALL, env=env)
    assert memories.stdout.strip().splitlines()[-1] == "a memory to keep | 384", memories.stderr

    # and: a second restore over the data is refused unless forced
    again = openclaw(target, "restore", str(backup_file), env=env)
    assert again.returncode == 1
    assert "already holds" in again.stderr and "--force" in again.stderr
    assert openclaw(target, "restore", "--force", str(backup_file), env=env).returncode == 0

    # and: a folder whose key differs is refused before anything changes
    other = clean_env(OPENCLAW_ENCRYPTION_KEYS=new_key_spec("k7"))
    refused = openclaw(wrong_key, "restore", str(backup_file), env=other)
    assert refused.returncode == 1
    assert "'k7'" in refused.stderr and "OPENCLAW_ENCRYPTION_KEYS" in refused.stderr
    assert "nothing was changed" in refused.stderr
    assert public_tables(wrong_key) == 0


def test_restore_refuses_a_file_that_is_not_a_backup(folders):
    data_dir, *_rest = folders
    bogus = data_dir / "not-a-backup.tar"
    bogus.write_bytes(b"hello")

    result = openclaw(data_dir, "restore", str(bogus), env=clean_env())

    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("openclaw: error: ") and "is not an OpenClaw backup" in last, (
        result.stderr)
