"""The demo data answers what README shows, and a route to a model that is not there
says which model and which rule: through a live server with the official client."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from django.utils import translation

from openclaw_site.bootstrap import load_demo_fixtures
from routing import rules
from routing.keys import create_key
from routing.models import RoutingRule
from routing.rules import RequestFacts, resolve_route

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)
LONG = "word " * 1760  # ≈ 2,200 tokens by the estimate


@pytest.fixture
def demo():
    load_demo_fixtures(REPO / "fixtures")
    rules.clear_local_copy()
    yield
    rules.clear_local_copy()


def client(url: str, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=create_key("demo")[1], max_retries=0,
                         timeout=20, **options)


def test_every_enabled_demo_rule_targets_a_registered_model(demo):
    table = rules.TABLE.get()

    assert table.rules, "the demo has enabled rules"
    for rule in table.rules:
        assert rule.target_model in table.registered, rule.name
        assert all(name in table.registered for name in rule.fallbacks), rule.name
    # the seed's rules are there to copy from, disabled
    assert RoutingRule.objects.filter(enabled=False, target_model="local-7b").exists()


def test_readme_emergency_and_a_long_prompt_to_echo_answer(demo, live_server_url):
    api = client(live_server_url)

    emergency = api.chat.completions.with_raw_response.create(
        model="emergency", messages=[{"role": "user", "content": "Hello"}])
    long = api.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": LONG}], max_tokens=8)

    assert emergency.headers["x-openclaw-model"] == "echo"
    assert emergency.headers["x-openclaw-route"].startswith("Emergency model; instance=")
    assert emergency.parse().choices[0].message.content
    assert long.headers["x-openclaw-model"] == "echo"


def test_a_rule_whose_model_is_missing_names_it_and_the_rule(demo, live_server_url):
    RoutingRule.objects.filter(name_en="Long context (seed example)").update(enabled=True)
    rules.bump_version()

    with pytest.raises(openai.NotFoundError) as missing:
        client(live_server_url).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": LONG}])
    with pytest.raises(openai.NotFoundError) as unknown:
        client(live_server_url).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError) as chinese:
        client(live_server_url, default_headers={"Accept-Language": "zh-CN"}).chat \
            .completions.create(model="gpt-4o", messages=[{"role": "user", "content": LONG}])

    message = missing.value.body["message"]
    assert "“gpt-4o”" in message and "“cloud-32k”" in message
    assert "Long context (seed example)" in message
    assert missing.value.body["code"] == "model_not_found"
    assert "“no-such-model”" in unknown.value.body["message"]
    assert "cloud-32k" in chinese.value.body["message"]
    assert "长上下文" in chinese.value.body["message"]  # the rule's name in Chinese
    assert "路由" in chinese.value.body["message"]


def test_the_route_explanation_speaks_the_users_language(demo):
    facts = RequestFacts(model="echo", messages=[{"role": "user", "content": "hello"}])

    with translation.override("zh-hans"):
        chinese = resolve_route(facts).explanation
    english = resolve_route(facts).explanation

    assert english[0].startswith("model \"echo\", context length ≈")
    assert any("Emergency model" in line and "→ no" in line for line in english)
    assert chinese[0].startswith("模型 \"echo\"")
    assert any("紧急模型" in line for line in chinese)
    assert not any("context length" in line or "→ no" in line for line in chinese)


def test_an_engine_error_speaks_the_callers_language(demo, live_server_url):
    chinese = client(live_server_url, default_headers={"Accept-Language": "zh-CN"})

    with pytest.raises(openai.BadRequestError) as refused:
        chinese.chat.completions.create(model="all-minilm-l6-v2",
                                        messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as english:
        client(live_server_url).chat.completions.create(
            model="all-minilm-l6-v2", messages=[{"role": "user", "content": "hi"}])

    assert "向量嵌入模型不能对话" in refused.value.body["message"]
    assert "an embedding model cannot chat" in english.value.body["message"]
