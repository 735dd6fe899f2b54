"""The admission service on the real database and Redis: one round trip that checks and
counts atomically (bursts admit exactly the limit, reservations bound a budget's
overshoot, settlements turn them into the real count), scopes (a workflow scope never
opens another model), and signed-in users' quotas (own row, then the most generous of
their groups', then everyone's; a change applies without a restart)."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError

from chat.models import Workflow, WorkflowSchedule
from chat.workflows.schedule import run_schedule
from routing.admission import admit, admit_sync, check_scope, user_quota
from routing.keys import KeyRefused, create_key
from routing.limits import key_limits, read
from routing.quota_models import Quota, QuotaTarget
from routing.quotas import effective_quota

pytestmark = pytest.mark.django_db(transaction=True)


async def outcomes(calls) -> list:
    """Each call's ticket or refusal, run together."""
    return await asyncio.gather(*calls, return_exceptions=True)


async def test_twenty_parallel_admissions_on_an_rpm_5_key_admit_exactly_five():
    _key, secret = await sync_to_async(create_key)("burst", rpm_limit=5)

    results = await outcomes(admit(secret=secret, client_addr="127.0.0.1", model="m")
                             for _ in range(20))

    refused = [r for r in results if isinstance(r, KeyRefused)]
    assert len(results) - len(refused) == 5
    assert {r.code for r in refused} == {"rate_limit_exceeded"}
    assert all(0 < r.retry_after <= 60 for r in refused)


async def test_parallel_reservations_overshoot_a_budget_by_at_most_one_reservation():
    key, secret = await sync_to_async(create_key)("budget", token_budget=100,
                                                  budget_period="day")

    # each needs 10 prompt tokens and may answer 10 more: 20 reserved per request
    results = await outcomes(admit(secret=secret, client_addr="127.0.0.1", model="m",
                                   tokens=10, reserve=10) for _ in range(20))
    admitted = [r for r in results if not isinstance(r, BaseException)]
    (used,) = (await sync_to_async(read)(key_limits(key))).values

    assert len(admitted) == 5  # 0, 20, 40, 60, 80 had room for 10 more; 100 had not
    assert used == 100 <= 100 + 10
    assert {r.code for r in results if isinstance(r, KeyRefused)} == {"budget_exhausted"}

    # when: each answered with 12 tokens, the reservations become the real count
    for ticket in admitted:
        await ticket.asettle(12)
    assert (await sync_to_async(read)(key_limits(key))).values == [60]


def test_refused_admission_counts_nothing():
    key, secret = create_key("tpm", rpm_limit=10, tpm_limit=50)

    with pytest.raises(KeyRefused) as refused:
        admit_sync(secret=secret, client_addr="127.0.0.1", model="m", tokens=60)

    assert refused.value.code == "token_rate_limit_exceeded"
    assert read(key_limits(key)).values == [0, 0]


def test_workflow_scope_never_opens_another_model():
    key, _secret = create_key("wf", allowed_models=["workflow/support"])

    check_scope(key, "workflow/support")  # /v1's model name of the workflow
    check_scope(key, None, workflow="support")  # the workflow's own model choice
    check_scope(key, "helper", workflow="support", own_model="helper")
    with pytest.raises(KeyRefused) as picked:
        check_scope(key, "cloud-32k", workflow="support", own_model="helper")
    with pytest.raises(KeyRefused) as other:
        check_scope(key, None, workflow="billing")
    with pytest.raises(KeyRefused) as plain:
        check_scope(key, "helper")

    assert picked.value.code == other.value.code == plain.value.code == "model_not_allowed"


def user(name: str, *groups: Group):
    found = get_user_model().objects.create_user(name, password="pw-" + name)
    found.groups.add(*groups)
    return found


def test_own_quota_wins_then_the_most_generous_group_then_everyone():
    staff, interns = Group.objects.create(name="staff"), Group.objects.create(name="interns")
    Quota.objects.create(target=QuotaTarget.GROUP, group=staff, requests=100,
                         requests_period="hour", token_budget=5000, budget_period="day")
    Quota.objects.create(target=QuotaTarget.GROUP, group=interns, requests=10,
                         requests_period="minute", tokens=1000)  # 600/hour, no budget
    Quota.objects.create(target=QuotaTarget.EVERYONE, token_budget=50)
    both, alone = user("both", staff, interns), user("alone")
    own = user("own", staff)
    Quota.objects.create(target=QuotaTarget.USER, user=own, requests=1)

    mixed = {limit.kind: (limit.ceiling, limit.period)
             for limit in effective_quota(both.pk).limits}

    # requests: 10/minute beats 100/hour; tokens: staff sets none, so none; budget: interns
    # set none, so none — joining a group never takes anything away
    assert mixed == {"requests": (10, "minute")}
    assert [(lim.kind, lim.ceiling) for lim in effective_quota(alone.pk).limits] == [
        ("budget", 50)]
    assert [(lim.kind, lim.ceiling) for lim in effective_quota(own.pk).limits] == [
        ("requests", 1)]


def test_a_users_quota_is_counted_and_refused_with_the_v1_codes():
    someone = user("counted")
    Quota.objects.create(target=QuotaTarget.USER, user=someone, token_budget=30,
                         budget_period="day")

    first = admit_sync(user=someone, tokens=10)
    first.settle(25)
    with pytest.raises(KeyRefused) as spent:
        admit_sync(user=someone, tokens=10)

    assert (spent.value.status, spent.value.code) == (429, "budget_exhausted")
    assert spent.value.quota == {"kind": "budget", "used": 25, "limit": 30, "period": "day",
                                 "resets_in": spent.value.retry_after, "spent": True}
    assert user_quota(someone)["used"] == 25


async def test_a_quota_change_applies_to_the_next_turn_without_a_restart():
    someone = await sync_to_async(user)("changing")
    row = await Quota.objects.acreate(target=QuotaTarget.USER, user=someone, requests=1)
    await admit(user=someone)  # the copy of this process now holds requests=1
    with pytest.raises(KeyRefused):
        await admit(user=someone)

    # when: an operator raises it (committed: every process's copy is dropped)
    row.requests = 5
    await row.asave()

    assert (await admit(user=someone)).quota()["used"] == 2


async def test_a_disabled_account_is_refused():
    someone = await sync_to_async(user)("leaving")
    await admit(user=someone)
    someone.is_active = False
    await someone.asave()

    with pytest.raises(KeyRefused) as refused:
        await admit(user=someone)

    assert (refused.value.status, refused.value.code) == (401, "account_disabled")


def test_quota_rows_explain_what_is_wrong():
    group = Group.objects.create(name="g")
    someone = user("v")
    Quota.objects.create(target=QuotaTarget.EVERYONE, requests=5)

    with pytest.raises(ValidationError) as no_user:
        Quota(target=QuotaTarget.USER, group=group).full_clean()
    with pytest.raises(ValidationError) as second:
        Quota(target=QuotaTarget.EVERYONE).full_clean()
    with pytest.raises(ValidationError) as named:
        Quota(target=QuotaTarget.GROUP, group=group, user=someone).full_clean()

    assert set(no_user.value.message_dict) == {"user", "group"}
    assert "already a quota for everyone" in second.value.message_dict["target"][0]
    assert "has no user" in named.value.message_dict["user"][0]


def test_admin_adds_a_quota_and_lists_what_it_allows(admin_client):
    someone = user("listed")

    response = admin_client.post("/admin/routing/quota/add/", {
        "target": "user", "user": someone.pk, "requests": "", "requests_period": "minute",
        "tokens": "900", "tokens_period": "day", "token_budget": "500",
        "budget_period": "day"})
    refused_html = response.content.decode()
    fixed = admin_client.post("/admin/routing/quota/add/", {
        "target": "user", "user": someone.pk, "requests": "", "requests_period": "minute",
        "tokens": "", "tokens_period": "day", "token_budget": "500", "budget_period": "day"})
    listing = admin_client.get("/admin/routing/quota/").content.decode()

    assert response.status_code == 200 and "the budget would refuse first" in refused_html
    assert fixed.status_code == 302
    assert "budget 500 / Day" in listing and "budget: 0/500" in listing


def test_a_scheduled_run_of_a_user_whose_budget_is_spent_is_refused_and_recorded():
    someone = user("scheduled")
    Quota.objects.create(target=QuotaTarget.USER, user=someone, token_budget=5)
    flow = Workflow.objects.create(slug="nightly", name="nightly", default_model="m",
                                   definition={"nodes": [{"id": "answer", "type": "llm"}],
                                               "edges": []})
    schedule = WorkflowSchedule.objects.create(name="n", workflow=flow, every_seconds=60,
                                               user="scheduled", content="a long question")

    status = run_schedule(schedule.pk)

    schedule.refresh_from_db()
    assert status == "error" and schedule.last_status == "error"
    assert "Token budget of 5" in schedule.last_error
