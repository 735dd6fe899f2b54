"""Production security settings (``manage.py check --deploy`` with the production
environment, in a subprocess as an operator runs it), the content security policy,
the HTTPS redirect, and admin login throttling against the real cache."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "OPENCLAW_ENV": "production",
    "ALLOWED_HOSTS": "openclaw.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://openclaw.example.com",
}


def run_django(args: list[str], **extra: str) -> subprocess.CompletedProcess:
    """``manage.py`` with the project's own settings, a fresh data folder and ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENCLAW_", "DJANGO_")) and k not in {"SECRET_KEY", "DEBUG"}}
    with tempfile.TemporaryDirectory(prefix="ocsec-") as data_dir:
        env.update(OPENCLAW_DATA_DIR=data_dir, SECRET_KEY=secrets.token_urlsafe(50),
                   DJANGO_SETTINGS_MODULE="openclaw_site.settings", **extra)
        return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)


def test_check_deploy_reports_no_issue_under_the_production_environment():
    result = run_django(["check", "--deploy", "--fail-level", "WARNING"], **PRODUCTION)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_check_deploy_finds_issues_without_it():
    result = run_django(["check", "--deploy", "--fail-level", "WARNING"])

    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr


def test_production_settings_values():
    script = ("from django.conf import settings as s; import json; print(json.dumps({"
              "'hsts': s.SECURE_HSTS_SECONDS, 'subdomains': s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
              "'redirect': s.SECURE_SSL_REDIRECT, 'session': s.SESSION_COOKIE_SECURE, "
              "'csrf': s.CSRF_COOKIE_SECURE, 'httponly': s.SESSION_COOKIE_HTTPONLY, "
              "'csrf_httponly': s.CSRF_COOKIE_HTTPONLY, 'origins': s.CSRF_TRUSTED_ORIGINS, "
              "'nosniff': s.SECURE_CONTENT_TYPE_NOSNIFF, 'referrer': s.SECURE_REFERRER_POLICY, "
              "'metrics': s.OPENCLAW_METRICS_ALLOW_CIDRS}))")
    result = run_django(["shell", "-c", script], **PRODUCTION)

    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values == {
        "hsts": 31536000, "subdomains": True, "redirect": True, "session": True, "csrf": True,
        "httponly": True, "csrf_httponly": True, "origins": ["https://openclaw.example.com"],
        "nosniff": True, "referrer": "same-origin", "metrics": ["127.0.0.0/8", "::1/128"],
    }


def test_production_refuses_debug():
    result = run_django(["check"], DEBUG="true", **PRODUCTION)

    assert result.returncode != 0
    assert "DEBUG must be off when OPENCLAW_ENV=production" in result.stderr


def test_https_redirect_spares_probes_and_scrapes(settings):
    settings.SECURE_SSL_REDIRECT = True
    client = Client()

    assert client.get("/admin/login/").status_code == 301
    assert client.get("/admin/login/")["Location"].startswith("https://")
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_html_pages_carry_the_content_security_policy_and_json_does_not():
    page = Client().get("/admin/login/")
    health = Client().get("/healthz")

    assert "default-src 'self'" in page["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in page["Content-Security-Policy"]
    assert page["X-Content-Type-Options"] == "nosniff"
    assert page["Referrer-Policy"] == "same-origin"
    assert "Content-Security-Policy" not in health


# --- login throttling -----------------------------------------------------------------------


@pytest.fixture
def admin_user(db):
    username = f"admin-{uuid.uuid4().hex[:8]}"
    get_user_model().objects.create_superuser(username, "admin@example.com", "right-pass-42")
    return username


def login(client: Client, username: str, password: str):
    return client.post("/admin/login/?next=/admin/",
                       {"username": username, "password": password})


def test_admin_login_is_refused_after_repeated_failures_even_with_the_right_password(
        admin_user, settings):
    settings.OPENCLAW_LOGIN_MAX_FAILURES = 3
    client = Client(REMOTE_ADDR=f"198.51.100.{uuid.uuid4().int % 250}")

    for _ in range(3):
        assert "correct username and password" in login(client, admin_user, "wrong").text

    refused = login(client, admin_user, "right-pass-42")

    assert refused.status_code == 200  # the form again, not the redirect into the admin
    assert "Too many failed sign-in attempts" in refused.text
    assert "_auth_user_id" not in client.session


def test_lockout_covers_the_username_from_another_address(admin_user, settings):
    settings.OPENCLAW_LOGIN_MAX_FAILURES = 3
    for _ in range(3):
        login(Client(REMOTE_ADDR="203.0.113.7"), admin_user, "wrong")

    elsewhere = login(Client(REMOTE_ADDR="192.0.2.200"), admin_user, "right-pass-42")

    assert "Too many failed sign-in attempts" in elsewhere.text


def test_a_success_before_the_limit_forgets_the_usernames_failures(admin_user, settings):
    settings.OPENCLAW_LOGIN_MAX_FAILURES = 3
    for _ in range(2):
        login(Client(REMOTE_ADDR="192.0.2.10"), admin_user, "wrong")
    assert login(Client(REMOTE_ADDR="192.0.2.11"), admin_user, "right-pass-42").status_code == 302

    for _ in range(2):
        login(Client(REMOTE_ADDR="192.0.2.12"), admin_user, "wrong")
    signed_in = login(Client(REMOTE_ADDR="192.0.2.13"), admin_user, "right-pass-42")

    assert signed_in.status_code == 302
