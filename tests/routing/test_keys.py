"""API keys on the real database and the Redis cache: authentication (expiry,
revocation, rotation grace, CIDR), X-Forwarded-For trust, scopes, rate limits
and budgets, rotation by beat, and the admin showing the secret once."""

import threading
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.utils import timezone

from core.client_ip import client_ip
from routing.admission import authenticate, check_scope
from routing.key_models import ApiKey
from routing.keys import KeyRefused, create_key, hash_secret, revoke_key, rotate_key
from routing.limits import check_limits, record_usage
from routing.tasks import rotate_due_keys

pytestmark = pytest.mark.django_db


def refusal(call, *args) -> KeyRefused:
    with pytest.raises(KeyRefused) as caught:
        call(*args)
    return caught.value


def test_valid_key_authenticates_and_records_last_use():
    key, secret = create_key("svc")

    assert authenticate(secret, "203.0.113.5") == key
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_missing_and_wrong_secrets_are_rejected_with_401():
    key, secret = create_key("svc")

    assert refusal(authenticate, "", "127.0.0.1").status == 401
    wrong = refusal(authenticate, f"{key.prefix}.not-the-secret", "127.0.0.1")
    assert (wrong.status, wrong.code) == (401, "invalid_api_key")
    assert refusal(authenticate, "garbage", "127.0.0.1").status == 401


def test_expired_key_is_rejected_with_401():
    _key, secret = create_key("old", expires_at=timezone.now() - timedelta(seconds=1))

    refused = refusal(authenticate, secret, "127.0.0.1")

    assert (refused.status, refused.code) == (401, "expired_api_key")
    assert "expired" in refused.message


def test_revoked_key_is_rejected_with_401():
    key, secret = create_key("svc")

    revoke_key(key)

    refused = refusal(authenticate, secret, "127.0.0.1")
    assert (refused.status, refused.code) == (401, "revoked_api_key")


def test_rotated_key_works_within_grace_then_is_refused_and_successor_works():
    key, old_secret = create_key("svc", allowed_models=["m1"], rpm_limit=5)

    new, new_secret = rotate_key(key, grace_hours=1)

    assert (new.rotated_from, new.allowed_models, new.rpm_limit) == (key, ["m1"], 5)
    assert authenticate(old_secret, "127.0.0.1") == key  # within grace
    assert authenticate(new_secret, "127.0.0.1") == new
    ApiKey.objects.filter(pk=key.pk).update(grace_until=timezone.now() - timedelta(seconds=1))
    refused = refusal(authenticate, old_secret, "127.0.0.1")
    assert (refused.status, refused.code) == (401, "rotated_api_key")
    assert authenticate(new_secret, "127.0.0.1") == new


def test_wrong_network_is_refused_with_403_for_ipv4_and_ipv6():
    _key, secret = create_key("svc", allowed_cidrs=["10.0.0.0/8", "2001:db8::/32"])

    for addr in ("192.168.1.1", "2001:db9::1"):
        refused = refusal(authenticate, secret, addr)
        assert (refused.status, refused.code) == (403, "ip_not_allowed")
        assert addr in refused.message


def test_allowed_network_is_accepted_for_ipv4_and_ipv6():
    key, secret = create_key("svc", allowed_cidrs=["10.0.0.0/8", "2001:db8::/32"])

    assert authenticate(secret, "10.1.2.3") == key
    assert authenticate(secret, "2001:db8::42") == key


def test_spoofed_forwarded_for_from_untrusted_peer_is_ignored():
    # the peer is not a trusted proxy: its X-Forwarded-For claims nothing
    assert client_ip("198.51.100.9", "10.0.0.1", ["192.0.2.0/24"]) == "198.51.100.9"
    assert client_ip("198.51.100.9", "10.0.0.1", []) == "198.51.100.9"


def test_forwarded_for_from_trusted_proxy_gives_rightmost_untrusted_address():
    proxies = ["192.0.2.0/24", "fd00::/8"]

    # the client forged "10.0.0.1"; the proxy appended the real address
    assert client_ip("192.0.2.10", "10.0.0.1, 198.51.100.7", proxies) == "198.51.100.7"
    assert client_ip("fd00::1", "2001:db8::5, 192.0.2.11", proxies) == "2001:db8::5"


def test_spoofed_forwarded_for_cannot_pass_a_cidr_allowlist(settings):
    settings.OPENCLAW_TRUSTED_PROXIES = ["192.0.2.0/24"]
    _key, secret = create_key("svc", allowed_cidrs=["10.0.0.0/8"])

    addr = client_ip("198.51.100.9", "10.0.0.1")

    assert refusal(authenticate, secret, addr).status == 403
    assert authenticate(secret, client_ip("192.0.2.1", "10.0.0.1")).name == "svc"


def test_model_outside_scope_is_refused_with_403():
    key, _secret = create_key("svc", allowed_models=["local-7b"])

    check_scope(key, "local-7b")
    refused = refusal(check_scope, key, "cloud-32k")
    assert (refused.status, refused.code) == (403, "model_not_allowed")
    assert "cloud-32k" in refused.message


def test_rpm_exhaustion_is_refused_with_429_and_retry_after():
    key, _secret = create_key("svc", rpm_limit=2)

    check_limits(key)
    check_limits(key)
    refused = refusal(check_limits, key)

    assert (refused.status, refused.code) == (429, "rate_limit_exceeded")
    assert 0 < refused.retry_after <= 60


def test_tpm_exhaustion_is_refused_with_429():
    key, _secret = create_key("svc", tpm_limit=100)

    check_limits(key, 60)
    record_usage(key, 60)
    refused = refusal(check_limits, key, 60)

    assert (refused.status, refused.code) == (429, "token_rate_limit_exceeded")
    assert 0 < refused.retry_after <= 60


def test_budget_exhaustion_is_refused_until_the_period_renews():
    key, _secret = create_key("svc", token_budget=1000, budget_period="day")

    record_usage(key, 990)
    check_limits(key, 10)
    refused = refusal(check_limits, key, 11)

    assert (refused.status, refused.code) == (429, "budget_exhausted")
    assert 0 < refused.retry_after <= 86400


def test_successor_shares_its_predecessors_counters():
    key, _secret = create_key("svc", rpm_limit=1)
    check_limits(key)

    new, _new_secret = rotate_key(key)

    assert refusal(check_limits, new).status == 429


def test_counters_are_shared_between_threads():
    key, _secret = create_key("svc", rpm_limit=1)
    results: list[int] = []

    def call():
        try:
            check_limits(key)
            results.append(200)
        except KeyRefused as exc:
            results.append(exc.status)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [200, 429]


def test_secret_is_stored_only_as_a_hash():
    key, secret = create_key("svc")

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM routing_apikey WHERE id = %s", [key.pk])
        row = cursor.fetchone()
    random_part = secret.split(".", 1)[1]
    assert not any(isinstance(v, str) and random_part in v for v in row)
    assert hash_secret(secret) in row
    assert secret.startswith(key.prefix + ".")


def test_beat_task_rotates_keys_whose_rotation_is_due():
    due, _ = create_key("due", rotation_hours=72)
    fresh, _ = create_key("fresh", rotation_hours=72)
    never, _ = create_key("never", rotation_hours=0)
    ApiKey.objects.filter(pk__in=[due.pk, never.pk]).update(
        created_at=timezone.now() - timedelta(hours=73))

    assert rotate_due_keys() == 1

    due.refresh_from_db()
    fresh.refresh_from_db()
    never.refresh_from_db()
    assert due.grace_until is not None
    assert (fresh.grace_until, never.grace_until) == (None, None)
    successor = ApiKey.objects.get(rotated_from=due)
    assert successor.rotation_hours == 72
    assert rotate_due_keys() == 0  # the successor is not due, the old key is rotated


def test_admin_create_shows_the_secret_once_and_never_the_hash(admin_client):
    response = admin_client.post("/admin/routing/apikey/add/", {
        "name": "studio", "owner": "", "allowed_models": "local-7b\ncloud-32k",
        "allowed_cidrs": "10.0.0.0/8\n::1/128", "rpm_limit": "60", "tpm_limit": "",
        "token_budget": "", "budget_period": "month", "expires_at_0": "", "expires_at_1": "",
        "rotation_hours": "72"}, follow=True)

    key = ApiKey.objects.get(name="studio")
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    secrets = [t.rsplit(" ", 1)[1] for t in texts if "shown only this once" in t]
    assert len(secrets) == 1 and authenticate(secrets[0], "10.0.0.1") == key
    assert (key.allowed_models, key.allowed_cidrs) == (["local-7b", "cloud-32k"],
                                                       ["10.0.0.0/8", "::1/128"])
    page = admin_client.get(f"/admin/routing/apikey/{key.pk}/change/").content.decode()
    assert secrets[0] not in page and key.secret_hash not in page
    listing = admin_client.get("/admin/routing/apikey/").content.decode()
    assert key.prefix in listing and secrets[0] not in listing


def test_admin_names_a_bad_network_on_its_field(admin_client):
    response = admin_client.post("/admin/routing/apikey/add/", {
        "name": "bad", "allowed_models": "", "allowed_cidrs": "10.0.0.0/8\n10.0.0.300/8",
        "budget_period": "month", "rotation_hours": "72"})

    assert response.status_code == 200
    assert "10.0.0.300/8" in response.context["adminform"].form.errors["allowed_cidrs"][0]
    assert not ApiKey.objects.exists()


def test_admin_rotate_and_revoke_actions(admin_client):
    key, secret = create_key("svc")

    response = admin_client.post("/admin/routing/apikey/", {
        "action": "rotate", "_selected_action": [key.pk]}, follow=True)
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    new_secret = next(t.rsplit(" ", 1)[1] for t in texts if "shown only this once" in t)
    assert authenticate(new_secret, "127.0.0.1").rotated_from == key

    admin_client.post("/admin/routing/apikey/", {
        "action": "revoke", "_selected_action": [key.pk]})
    assert refusal(authenticate, secret, "127.0.0.1").code == "revoked_api_key"
