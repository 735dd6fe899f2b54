"""`openclaw keys create|list|rotate|revoke` on the real database."""

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from routing.admission import authenticate
from routing.key_models import ApiKey
from routing.keys import KeyRefused

pytestmark = pytest.mark.django_db


def keys(*args) -> str:
    out, err = StringIO(), StringIO()
    call_command("keys", *args, stdout=out, stderr=err)
    return out.getvalue()


def test_create_prints_the_secret_alone_on_the_last_line():
    get_user_model().objects.create_user("alice")

    out = keys("create", "--name", "ci", "--models", "local-7b,cloud-32k", "--cidr",
               "10.0.0.0/8", "--cidr", "::1/128", "--rpm", "30", "--budget", "5000",
               "--budget-period", "week", "--expires", "30d", "--owner", "alice")

    secret = out.rstrip("\n").splitlines()[-1]
    key = authenticate(secret, "::1")
    assert (key.name, key.owner.username, key.rpm_limit, key.budget_period) == (
        "ci", "alice", 30, "week")
    assert key.allowed_models == ["local-7b", "cloud-32k"]
    assert key.allowed_cidrs == ["10.0.0.0/8", "::1/128"]
    assert key.expires_at is not None


def test_create_with_json_includes_the_secret():
    data = json.loads(keys("create", "--name", "ci", "--expires", "2099-01-01", "--json"))

    key = authenticate(data["secret"], "127.0.0.1")
    assert (data["prefix"], data["name"]) == (key.prefix, "ci")
    assert data["expires_at"].startswith("2099-01-01")


def test_bad_cidr_is_refused_naming_it():
    with pytest.raises(CommandError, match=r"--cidr: .*10\.0\.0\.999/8"):
        keys("create", "--name", "ci", "--cidr", "10.0.0.999/8")
    assert not ApiKey.objects.exists()


def test_bad_or_past_date_is_refused_with_a_message():
    with pytest.raises(CommandError, match="is not a date"):
        keys("create", "--name", "ci", "--expires", "next tuesday")
    with pytest.raises(CommandError, match="in the past"):
        keys("create", "--name", "ci", "--expires", "2001-01-01")


def test_unknown_owner_is_refused():
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        keys("create", "--name", "ci", "--owner", "nobody")


def test_list_never_shows_secrets():
    secret = keys("create", "--name", "ci").splitlines()[-1]

    rows = json.loads(keys("list", "--json"))
    table = keys("list")

    assert [r["name"] for r in rows] == ["ci"]
    assert secret not in json.dumps(rows) and secret not in table
    assert rows[0]["prefix"] in table


def test_rotate_prints_the_successor_secret_and_revoke_refuses_the_key():
    old_secret = keys("create", "--name", "ci").splitlines()[-1]
    prefix = old_secret.split(".")[0]

    new_secret = keys("rotate", prefix, "--grace-hours", "0").splitlines()[-1]

    assert authenticate(new_secret, "127.0.0.1").rotated_from.prefix == prefix
    with pytest.raises(KeyRefused, match="rotated"):
        authenticate(old_secret, "127.0.0.1")
    with pytest.raises(CommandError, match="already rotated"):
        keys("rotate", prefix)
    keys("revoke", new_secret.split(".")[0])
    with pytest.raises(KeyRefused, match="revoked"):
        authenticate(new_secret, "127.0.0.1")


def test_unknown_prefix_is_refused():
    with pytest.raises(CommandError, match="no API key with prefix"):
        keys("revoke", "oc_nothere")
