"""Routing rules: the seed's rules, conditions and their validation, the YAML
`routing:` section, and invalidation of every process's copy on an edit."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from routing import rules
from routing.config import ConfigError, apply_config, export_config
from routing.models import ModelEndpoint, RoutingRule, validate_condition
from routing.rules import RequestFacts, estimate_tokens, evaluate, resolve_route
from tests.seed_rules import load_seed_rules

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


@pytest.fixture
def seed_rules():
    load_seed_rules(hybrid=False)


def chat(text: str, model: str = "gpt-4o", **facts) -> RequestFacts:
    return RequestFacts(model=model, messages=[{"role": "user", "content": text}], **facts)


def leaf(field, op, value) -> dict:
    return {"field": field, "op": op, "value": value}


def test_seed_emergency_goes_to_local_7b(seed_rules):
    decision = resolve_route(chat("help", model="emergency"))

    assert decision.rule.name == "Emergency model"
    assert decision.chain == ["local-7b", "fallback-model"]


def test_seed_long_prompt_goes_to_cloud_32k(seed_rules):
    decision = resolve_route(chat("word " * 2000))  # 10 000 chars ≈ 2500 tokens

    assert decision.target_model == "cloud-32k"
    assert decision.fallbacks == ["fallback-model"]


def test_seed_otherwise_default_model_then_fallback_model(seed_rules):
    decision = resolve_route(chat("hello"))

    assert decision.rule.name == "Default"
    assert decision.chain == ["default-model", "fallback-model"]
    assert any("MATCH" in line for line in decision.explanation)


def test_catch_all_rule_serves_a_registered_model_as_asked_and_backs_it_up(seed_rules):
    ModelEndpoint.objects.create(name="echo", engine="echo")
    rules.clear_local_copy()

    decision = resolve_route(chat("hello", model="echo"))

    assert decision.rule.name == "Default"
    assert decision.chain == ["echo", "default-model", "fallback-model"]
    # conditioned rules still apply to a registered model
    assert resolve_route(chat("help", model="emergency")).target_model == "local-7b"
    assert resolve_route(chat("word " * 2000, model="echo")).target_model == "cloud-32k"


def test_seed_fixture_names_are_translated(seed_rules):
    from django.utils import translation

    with translation.override("zh-hans"):
        assert RoutingRule.objects.get(name_en="Emergency model").name == "紧急模型"


def test_token_estimate_counts_cjk_characters_one_each():
    assert estimate_tokens([{"role": "user", "content": "a" * 400}]) == 100 + 4
    assert estimate_tokens([{"role": "user", "content": "你好世界"}]) == 4 + 4
    parts = [{"type": "text", "text": "abcd"}, {"type": "image_url", "image_url": {}}]
    assert estimate_tokens([{"role": "user", "content": parts}]) == 1 + 4


def test_lower_priority_number_wins_and_disabled_rules_are_skipped():
    RoutingRule.objects.create(name="late", priority=50, target_model="b")
    RoutingRule.objects.create(name="early", priority=5, target_model="a")
    RoutingRule.objects.create(name="off", priority=1, target_model="c", enabled=False)

    assert resolve_route(chat("x")).target_model == "a"


def test_no_match_uses_the_requested_model():
    RoutingRule.objects.create(name="only", priority=1, target_model="a",
                               condition=leaf("model", "eq", "other"))

    decision = resolve_route(chat("x", model="asked"))

    assert decision.rule is None and decision.chain == ["asked"]


def test_all_any_not_combine():
    facts = chat("secret plans", model="m1", user="ann", groups={"staff"})
    both = {"all": [leaf("model", "eq", "m1"), leaf("group", "eq", "staff")]}
    either = {"any": [leaf("model", "eq", "zz"), leaf("user", "eq", "ann")]}
    negated = {"not": leaf("content", "contains", "secret")}

    assert evaluate(both, facts)[0] is True
    assert evaluate(either, facts)[0] is True
    assert evaluate(negated, facts)[0] is False
    assert evaluate({"all": [both, negated]}, facts)[0] is False
    assert evaluate({}, facts)[0] is True


@pytest.mark.parametrize(("condition", "expected"), [
    (leaf("model", "eq", "m1"), True),
    (leaf("model", "ne", "m1"), False),
    (leaf("model", "in", ["a", "m1"]), True),
    (leaf("model", "not_in", ["a", "m1"]), False),
    (leaf("content", "contains", "Card"), True),
    (leaf("content", "contains", "card"), False),
    (leaf("content", "icontains", "CARD"), True),
    (leaf("content", "startswith", "My"), True),
    (leaf("content", "regex", r"\d{4}-\d{4}"), True),
    (leaf("context_length", "gt", 5), True),
    (leaf("context_length", "gte", 1000), False),
    (leaf("context_length", "lt", 1000), True),
    (leaf("context_length", "lte", 5), False),
    (leaf("api_key", "startswith", "oc_ab"), True),
    (leaf("language", "eq", "zh-hans"), True),
    (leaf("flag", "eq", "sensitive"), True),
    (leaf("flag", "not_in", ["sensitive", "x"]), False),
    (leaf("group", "in", ["ops", "staff"]), True),
    (leaf("group", "ne", "staff"), False),
])
def test_each_operator(condition, expected):
    facts = chat("My Card 1234-5678", model="m1", api_key="oc_abc", language="zh-hans",
                 flags={"sensitive"}, groups=["staff"])

    validate_condition(condition)
    assert evaluate(condition, facts)[0] is expected


@pytest.mark.parametrize(("condition", "path", "words"), [
    ({"all": [leaf("model", "eq", "a"), leaf("colour", "eq", "red")]}, "all[1].field",
     "Unknown field"),
    (leaf("context_length", "regex", "x"), "op", "does not apply to context_length"),
    ({"any": [{"not": leaf("content", "regex", "(unclosed")}]}, "any[0].not.value",
     "“(unclosed” is not a valid regular expression"),
    ({"all": [leaf("model", "eq", "a"), leaf("context_length", "gt", "2048")]},
     "all[1].value", "Must be an integer"),
    (leaf("group", "in", "staff"), "value", "list of strings"),
    (leaf("content", "regex", "a" * 201), "value", "longer than 200"),
    ({"all": []}, "all", "non-empty list"),
    ({"field": "model", "op": "eq"}, "value", "Missing"),
])
def test_invalid_conditions_are_refused_naming_the_path(condition, path, words):
    rule = RoutingRule(name="r", priority=1, target_model="a", condition=condition)

    with pytest.raises(ValidationError) as caught:
        rule.full_clean()

    text = " ".join(caught.value.message_dict["condition"])
    assert f"{path}: " in text and words in text


def test_rule_reports_models_missing_from_the_registry():
    ModelEndpoint.objects.create(name="a", engine="echo")
    rule = RoutingRule(name="r", target_model="a", fallbacks=["b", "c"])

    assert rule.unregistered_models() == ["b", "c"]


# --- YAML ---------------------------------------------------------------------------

CONFIG = """
models:
  - name: local-echo
    type: local
    engine: echo
routing:
  - name: Emergency
    priority: 10
    when: {field: model, op: eq, value: emergency}
    target: local-echo
  - name: Default
    priority: 1000
    target: default-model
    fallbacks: [fallback-model]
    description: everything else
"""


def test_yaml_routing_section_applies_and_updates_by_name():
    report = apply_config(CONFIG, environ={})

    assert "rule Emergency" in report.created
    assert list(RoutingRule.objects.values_list("name", "target_model")) == [
        ("Emergency", "local-echo"), ("Default", "default-model")]
    again = apply_config(CONFIG.replace("priority: 10\n", "priority: 11\n"), environ={})
    assert again.updated == ["rule Emergency"]
    assert RoutingRule.objects.get(name="Emergency").priority == 11
    assert RoutingRule.objects.count() == 2


def test_yaml_unregistered_target_is_a_warning():
    report = apply_config(CONFIG, environ={})

    assert any("default-model" in w and "fallback-model" in w for w in report.warnings)


def test_yaml_bad_rule_names_its_line_and_applies_nothing():
    bad = CONFIG.replace("value: emergency}", "value: emergency, extra: 1}").replace(
        "priority: 1000", "priority: high")

    with pytest.raises(ConfigError) as caught:
        apply_config(bad, environ={})

    lines = dict(caught.value.problems)
    assert "extra" in lines[9] and "priority" in lines[12]
    assert not ModelEndpoint.objects.exists() and not RoutingRule.objects.exists()


def test_yaml_bad_regex_deep_in_a_condition_names_its_line():
    text = """routing:
  - name: r
    target: m
    when:
      all:
        - {field: model, op: eq, value: a}
        - {field: content, op: regex, value: "(oops"}
"""
    with pytest.raises(ConfigError) as caught:
        apply_config(text, environ={})

    ((line, message),) = caught.value.problems
    assert line == 7 and "all[1].value" in message and "(oops" in message


def test_export_writes_rules_back_so_apply_changes_nothing():
    apply_config(CONFIG, environ={})

    again = apply_config(export_config(), environ={})

    assert again.created == [] and again.updated == []
    assert "rule Default" in again.unchanged


# --- invalidation -------------------------------------------------------------------


def test_edit_changes_the_next_resolve_in_this_process(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        rule = RoutingRule.objects.create(name="r", priority=1, target_model="a")
    assert resolve_route(chat("x")).target_model == "a"

    with django_capture_on_commit_callbacks(execute=True):
        rule.target_model = "b"
        rule.save()

    assert resolve_route(chat("x")).target_model == "b"


def test_endpoint_change_also_invalidates(django_capture_on_commit_callbacks):
    RoutingRule.objects.create(name="r", priority=1, target_model="a")
    assert resolve_route(chat("x")).unregistered == ["a"]

    with django_capture_on_commit_callbacks(execute=True):
        ModelEndpoint.objects.create(name="a", engine="echo")

    assert resolve_route(chat("x")).unregistered == []


WORKER = """
import django, sys
django.setup()
from routing.rules import RequestFacts, resolve_route
facts = RequestFacts(model="m", messages=[{"role": "user", "content": "hi"}])
print(resolve_route(facts).target_model, flush=True)
sys.stdin.readline()
print(resolve_route(facts).target_model, flush=True)
"""


@pytest.mark.django_db(transaction=True)
def test_edit_changes_resolve_route_in_another_process():
    rule = RoutingRule.objects.create(name="r", priority=1, target_model="before")
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings",
               OPENCLAW_TEST_WORKER_DB=connection.settings_dict["NAME"])
    process = subprocess.Popen([sys.executable, "-c", WORKER], cwd=REPO, env=env, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        first = process.stdout.readline().strip()
        rule.target_model = "after"
        rule.save()  # autocommit: the version is bumped at once
        process.stdin.write("go\n")
        process.stdin.flush()
        second = process.stdout.readline().strip()
        _out, err = process.communicate(timeout=30)
    finally:
        process.kill()

    assert (first, second) == ("before", "after"), err
