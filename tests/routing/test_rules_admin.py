"""Routing rules in the admin: condition errors named by path, a warning for a
model not in the registry, and the dry run page."""

import json

import pytest
from django.contrib.messages import get_messages

from routing import rules
from routing.models import RoutingRule
from tests.seed_rules import load_seed_rules

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/routing/routingrule/add/"
LIST_URL = "/admin/routing/routingrule/"
DRY_RUN_URL = "/admin/routing/routingrule/dry-run/"


@pytest.fixture(autouse=True)
def seed_rules():
    load_seed_rules(hybrid=False)
    yield
    rules.clear_local_copy()


def form_data(**overrides) -> dict:
    data = {"name_en": "r", "name_zh_hans": "", "description_en": "",
            "description_zh_hans": "", "priority": "5", "enabled": "on",
            "condition": "{}", "target_model": "a", "fallbacks": "[]"}
    data.update(overrides)
    return data


def test_changelist_summarises_conditions_and_links_the_dry_run(admin_client):
    page = admin_client.get(LIST_URL).content.decode()

    assert "model = &quot;emergency&quot;" in page
    assert "context length &gt; 2048" in page
    assert DRY_RUN_URL in page


def test_bad_condition_is_explained_with_its_path(admin_client):
    condition = json.dumps({"all": [{"field": "model", "op": "gt", "value": 1}]})

    response = admin_client.post(ADD_URL, form_data(condition=condition))

    assert response.status_code == 200
    assert "all[0].op" in response.content.decode()
    assert not RoutingRule.objects.filter(priority=5).exists()


def test_unregistered_target_saves_with_a_warning(admin_client):
    response = admin_client.post(ADD_URL, form_data(target_model="nowhere-model"), follow=True)

    assert RoutingRule.objects.filter(target_model="nowhere-model").exists()
    notes = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("not in the registry" in n and "nowhere-model" in n for n in notes)


def test_dry_run_shows_the_matching_rule_and_why(admin_client):
    body = {"model": "emergency", "messages": [{"role": "user", "content": "help"}]}

    response = admin_client.post(DRY_RUN_URL, {"request_json": json.dumps(body)})

    page = response.content.decode()
    assert response.status_code == 200
    assert "[10] Emergency model" in page
    assert "local-7b" in page and "fallback-model" in page
    assert "model is &quot;emergency&quot; → yes" in page


def test_dry_run_uses_the_extra_facts(admin_client):
    RoutingRule.objects.create(name="Sensitive", priority=1, target_model="local-7b",
                               condition={"field": "flag", "op": "eq", "value": "sensitive"})
    rules.clear_local_copy()  # the create's commit never happens in this test
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}

    response = admin_client.post(DRY_RUN_URL, {"request_json": json.dumps(body),
                                               "flags": "sensitive, other"})

    assert "[1] Sensitive" in response.content.decode()


def test_dry_run_bad_json_is_an_error_not_a_500(admin_client):
    response = admin_client.post(DRY_RUN_URL, {"request_json": '{"model": "x",'})

    assert response.status_code == 200
    assert "Not valid JSON" in response.content.decode()


def test_dry_run_page_needs_staff(client):
    response = client.get(DRY_RUN_URL)

    assert response.status_code == 302 and "/login/" in response["Location"]
