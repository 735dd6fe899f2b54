"""The demo plugin rows load cleanly, run on the studio's conversations and leave API
traffic unchanged, and with hybrid mode on a request carrying personal data is routed
by the seed rule to the local model only."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command

from plugins.base import PluginRequest
from plugins.chain import build_chain
from plugins.models import Plugin
from routing import rules
from routing.rules import RequestFacts, resolve_route
from tests.seed_rules import load_seed_rules

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture
def demo():
    load_seed_rules()
    call_command("loaddata", str(FIXTURES / "40_plugins.json"), verbosity=0)
    rules.clear_local_copy()
    yield
    rules.clear_local_copy()


def test_the_demo_plugins_load_without_problems(demo):
    chain = build_chain()

    assert chain.names == ["pii_redaction", "sensitive_words", "system_prompt"]
    assert chain.problems == []
    for row in Plugin.objects.all():
        row.full_clean()


def test_a_request_with_pii_in_hybrid_mode_is_routed_to_the_local_model(demo):
    # given: the operator turns hybrid mode on
    row = Plugin.objects.get(name="pii_redaction")
    row.config = {**row.config, "hybrid_mode": True, "redact": False}
    row.save()
    request = PluginRequest(messages=[{"role": "user", "content": "I'm at jo@example.com"}],
                            model="default-model", surface="studio")

    # when
    request = build_chain().pre_process(request)
    decision = resolve_route(RequestFacts(model=request.model, messages=request.messages,
                                          flags=request.flags))

    # then
    assert decision.rule.name == "Sensitive data stays local"
    assert decision.target_model == "local-7b"


def test_a_request_without_pii_follows_the_other_rules(demo):
    request = build_chain().pre_process(PluginRequest(
        messages=[{"role": "user", "content": "hello"}], model="emergency",
        surface="studio"))

    decision = resolve_route(RequestFacts(model=request.model, messages=request.messages,
                                          flags=request.flags))

    assert decision.target_model == "local-7b" and decision.rule.name == "Emergency model"
    assert request.messages[0]["role"] == "system"  # the demo's system prompt


def test_the_demo_plugins_leave_api_traffic_unchanged(demo):
    sent = [{"role": "user", "content": "mail badword to jo@example.com"}]

    request = build_chain().pre_process(PluginRequest(messages=[dict(m) for m in sent],
                                                      model="default-model", api_key="oc_x"))

    assert request.messages == sent and not request.metadata
