"""Settings come from the environment; bad values are refused with their name."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from core.crypto import new_key_spec
from openclaw_site.settings import env_bool, env_int, env_list, parse_database_url


def test_database_url_with_password_port_and_options():
    parsed = parse_database_url("postgresql://oc:p%40ss@db.example:6432/openclaw?sslmode=require")

    assert parsed["NAME"] == "openclaw"
    assert parsed["USER"] == "oc"
    assert parsed["PASSWORD"] == "p@ss"
    assert parsed["HOST"] == "db.example"
    assert parsed["PORT"] == "6432"
    assert parsed["OPTIONS"] == {"sslmode": "require"}


def test_database_url_with_a_unix_socket_host():
    parsed = parse_database_url("postgres://postgres@/openclaw?host=/run/pg")

    assert parsed["HOST"] == "/run/pg"
    assert parsed["OPTIONS"] == {}


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgresql://u@h/", "postgresql://u@h:x/db"])
def test_bad_database_url_is_refused(url):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        parse_database_url(url)


def test_env_helpers(monkeypatch):
    monkeypatch.setenv("OC_FLAG", "yes")
    monkeypatch.setenv("OC_NUM", "12")
    monkeypatch.setenv("OC_LIST", "a, b,,c")
    assert env_bool("OC_FLAG") is True
    assert env_int("OC_NUM", 1) == 12
    assert env_list("OC_LIST", []) == ["a", "b", "c"]
    monkeypatch.setenv("OC_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="OC_FLAG"):
        env_bool("OC_FLAG")


def _settings_in_subprocess(env: dict, expr: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"}
        and not k.startswith("OPENCLAW_")
    }
    return subprocess.run(
        [sys.executable, "-c", f"import openclaw_site.settings as s; print({expr})"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_embedded_secret_key_is_generated_once_and_kept_private(tmp_path):
    env = {"OPENCLAW_DATA_DIR": str(tmp_path)}

    first = _settings_in_subprocess(env, "s.SECRET_KEY")
    second = _settings_in_subprocess(env, "s.SECRET_KEY")

    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert len(first.stdout.strip()) >= 50
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_distributed_mode_requires_a_secret_key(tmp_path):
    result = _settings_in_subprocess(
        {"OPENCLAW_DATA_DIR": str(tmp_path), "DATABASE_URL": "postgresql://u@h/db"}, "s.SECRET_KEY"
    )

    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_distributed_mode_uses_redis_for_broker_layer_and_cache(tmp_path):
    result = _settings_in_subprocess(
        {
            "OPENCLAW_DATA_DIR": str(tmp_path),
            "DATABASE_URL": "postgresql://u@h/db",
            "REDIS_URL": "redis://10.0.0.5:6379/2",
            "SECRET_KEY": "x" * 50,
            "OPENCLAW_ENCRYPTION_KEYS": new_key_spec(),
        },
        "s.CELERY_BROKER_URL, s.CHANNEL_LAYERS['default']['CONFIG']['hosts'], "
        "s.CACHES['default']['LOCATION'], s.EMBEDDED_DATABASE, s.EMBEDDED_REDIS",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "redis://10.0.0.5:6379/2 ['redis://10.0.0.5:6379/2'] redis://10.0.0.5:6379/2 False False"
    )


def test_distributed_mode_requires_encryption_keys(tmp_path):
    result = _settings_in_subprocess(
        {"OPENCLAW_DATA_DIR": str(tmp_path), "DATABASE_URL": "postgresql://u@h/db",
         "SECRET_KEY": "x" * 50}, "s.ENCRYPTION_KEYS")

    assert result.returncode != 0
    assert "OPENCLAW_ENCRYPTION_KEYS must be set" in result.stderr


def test_embedded_encryption_key_is_generated_once(tmp_path):
    env = {"OPENCLAW_DATA_DIR": str(tmp_path)}
    expr = "list(s.ENCRYPTION_KEYS), len(next(iter(s.ENCRYPTION_KEYS.values())))"

    first = _settings_in_subprocess(env, expr)
    second = _settings_in_subprocess(env, expr)

    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout == "['k1'] 32\n"
    assert (tmp_path / "encryption_keys").stat().st_mode & 0o077 == 0
