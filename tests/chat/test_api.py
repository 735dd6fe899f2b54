"""The OpenAI-compatible API through the official ``openai`` SDK against a live
daphne, with the loopback OpenAI server as the backend: listing, completions
(whole and streamed), routing and fallback, and every refusal in OpenAI's shape."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest
from django.conf import settings

from routing import gateway
from routing.breaker import Breaker, CircuitState
from routing.keys import create_key
from routing.models import HealthState, ModelEndpoint, RoutingRule
from tests.seed_rules import load_seed_rules

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)
HELLO = [{"role": "user", "content": "hello there"}]


def endpoint(server, name: str, upstream: str, **fields) -> ModelEndpoint:
    return ModelEndpoint.objects.create(name=name, engine="openai", endpoint_url=server.url,
                                        upstream_model=upstream, **fields)


def client(url: str, secret: str, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0, timeout=20,
                         **options)


@pytest.fixture
def secret() -> str:
    return create_key("tests")[1]


def test_models_lists_enabled_models_filtered_by_the_keys_scope(live_server_url,
                                                                openai_server, secret):
    endpoint(openai_server, "alpha", "echo")
    endpoint(openai_server, "beta", "echo")
    endpoint(openai_server, "gamma", "echo", enabled=False)
    _key, scoped = create_key("scoped", allowed_models=["alpha", "gamma"])

    every = [m.id for m in client(live_server_url, secret).models.list()]
    allowed = client(live_server_url, scoped).models.list().data

    assert every == ["alpha", "beta"]
    assert [m.id for m in allowed] == ["alpha"]
    assert allowed[0].owned_by == "openclaw" and allowed[0].object == "model"


def test_completion_returns_text_usage_and_openclaw_headers(live_server_url, openai_server,
                                                            secret):
    instance = endpoint(openai_server, "chat-model", "echo")

    raw = client(live_server_url, secret).chat.completions.with_raw_response.create(
        model="chat-model", messages=HELLO, max_tokens=50)
    completion = raw.parse()

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 3)
    assert raw.headers["x-openclaw-model"] == "chat-model"
    assert raw.headers["x-openclaw-route"] == f"direct; instance={instance.pk}"
    assert float(raw.headers["x-openclaw-overhead-ms"]) >= 0
    assert openai_server.requests_for("echo")[0].body["max_tokens"] == 50


def test_stream_flushes_each_token_before_the_backend_finishes(live_server_url,
                                                               openai_server, secret):
    endpoint(openai_server, "slow-model", "slow-150+tokens-5")

    raw = client(live_server_url, secret).chat.completions.with_raw_response.create(
        model="slow-model", messages=HELLO, stream=True, stream_options={"include_usage": True})
    received, chunks = [], []
    for chunk in raw.parse():
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            received.append(time.monotonic())

    backend = openai_server.requests_for("slow-150+tokens-5")[0]
    last_token_sent = backend.chunk_times[5]  # [0] is the role chunk, then 5 tokens
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-openclaw-model"] == "slow-model"
    assert len(received) == 5
    assert received[0] < last_token_sent - 0.2  # the first token arrived while others waited
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert final.choices[0].finish_reason == "stop"
    assert final.x_openclaw["model"] == "slow-model"
    assert final.x_openclaw["models_tried"] == ["slow-model"]
    assert chunks[-1].usage.completion_tokens == 5


def test_seed_rule_sends_emergency_to_local_7b(live_server_url, openai_server, secret):
    load_seed_rules()
    endpoint(openai_server, "local-7b", "echo")

    raw = client(live_server_url, secret).chat.completions.with_raw_response.create(
        model="emergency", messages=HELLO)

    assert raw.headers["x-openclaw-model"] == "local-7b"
    assert raw.headers["x-openclaw-route"].startswith("Emergency model; instance=")
    assert raw.parse().model == "local-7b"


def _primary_with_backup(server) -> None:
    RoutingRule.objects.create(name="Primary with backup", priority=10,
                               condition={"field": "model", "op": "eq", "value": "primary"},
                               target_model="primary", fallbacks=["backup"])
    endpoint(server, "primary", "error-500")
    endpoint(server, "backup", "echo")


def test_backend_500_falls_back_to_the_next_model(live_server_url, openai_server, secret):
    _primary_with_backup(openai_server)

    raw = client(live_server_url, secret).chat.completions.with_raw_response.create(
        model="primary", messages=HELLO)

    assert raw.headers["x-openclaw-model"] == "backup"
    assert raw.headers["x-openclaw-route"].startswith("Primary with backup; ")
    assert raw.parse().choices[0].message.content == "echo: hello there"
    assert [r.model for r in openai_server.requests] == ["error-500", "echo"]


def test_stream_falls_back_before_the_first_token(live_server_url, openai_server, secret):
    _primary_with_backup(openai_server)

    chunks = list(client(live_server_url, secret).chat.completions.create(
        model="primary", messages=HELLO, stream=True))

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    assert chunks[-1].x_openclaw["models_tried"] == ["primary", "backup"]


def test_model_whose_context_window_is_too_small_is_skipped(live_server_url, openai_server,
                                                            secret):
    RoutingRule.objects.create(name="Small first", priority=10, condition={},
                               target_model="small", fallbacks=["large"])
    endpoint(openai_server, "small", "echo-small", context_window=16)
    endpoint(openai_server, "large", "echo-large", context_window=32000)

    raw = client(live_server_url, secret).chat.completions.with_raw_response.create(
        model="small", messages=[{"role": "user", "content": "word " * 100}])

    assert raw.headers["x-openclaw-model"] == "large"
    assert openai_server.requests_for("echo-small") == []


def test_missing_and_invalid_keys_are_refused_with_401(live_server_url):
    missing = httpx.get(f"{live_server_url}/v1/models")
    with pytest.raises(openai.AuthenticationError) as invalid:
        client(live_server_url, "oc_nothing.wrong").models.list()

    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    assert invalid.value.code == "invalid_api_key"


def test_model_outside_the_keys_scope_is_refused_with_403(live_server_url, openai_server):
    endpoint(openai_server, "chat-model", "echo")
    _key, scoped = create_key("scoped", allowed_models=["other"])

    with pytest.raises(openai.PermissionDeniedError) as refused:
        client(live_server_url, scoped).chat.completions.create(model="chat-model",
                                                                messages=HELLO)

    assert refused.value.code == "model_not_allowed"


def test_exhausted_rpm_is_refused_with_429_and_retry_after(live_server_url, openai_server):
    endpoint(openai_server, "chat-model", "echo")
    _key, limited = create_key("limited", rpm_limit=1)
    api = client(live_server_url, limited)
    api.chat.completions.create(model="chat-model", messages=HELLO)

    with pytest.raises(openai.RateLimitError) as refused:
        api.chat.completions.create(model="chat-model", messages=HELLO)

    assert refused.value.code == "rate_limit_exceeded"
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60


def test_backend_rate_limit_is_passed_on_as_429_with_its_retry_after(live_server_url,
                                                                     openai_server, secret):
    endpoint(openai_server, "busy", "ratelimit-7")

    with pytest.raises(openai.RateLimitError) as refused:
        client(live_server_url, secret).chat.completions.create(model="busy", messages=HELLO)

    assert refused.value.response.headers["retry-after"] == "7"


def test_unknown_model_is_refused_with_404(live_server_url, secret):
    with pytest.raises(openai.NotFoundError) as refused:
        client(live_server_url, secret).chat.completions.create(model="no-such-model",
                                                                messages=HELLO)

    assert refused.value.code == "model_not_found"


def test_bad_bodies_are_refused_with_400_naming_the_parameter(live_server_url, secret):
    api = client(live_server_url, secret)
    with pytest.raises(openai.BadRequestError) as empty:
        api.chat.completions.create(model="chat-model", messages=[])
    with pytest.raises(openai.BadRequestError) as role:
        api.chat.completions.create(model="chat-model",
                                    messages=[{"role": "robot", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as temperature:
        api.chat.completions.create(model="chat-model", messages=HELLO, temperature=5)
    malformed = httpx.post(f"{live_server_url}/v1/chat/completions", content=b"{not json",
                           headers={"Authorization": f"Bearer {secret}"})

    assert empty.value.param == "messages"
    assert role.value.param == "messages[0].role"
    assert temperature.value.param == "temperature"
    assert malformed.status_code == 400
    assert set(malformed.json()["error"]) == {"message", "type", "param", "code"}


def test_failure_after_the_first_token_is_sent_as_an_sse_error_event(live_server_url,
                                                                     openai_server, secret):
    endpoint(openai_server, "dropper", "drop-after-2")

    response = httpx.post(f"{live_server_url}/v1/chat/completions", timeout=20,
                          headers={"Authorization": f"Bearer {secret}"},
                          json={"model": "dropper", "messages": HELLO, "stream": True})
    events = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]

    assert response.status_code == 200
    assert '"error"' in events[-2] and "connection_error" in events[-2]
    assert events[-1] == "[DONE]"
    assert sum('"content": "' in e and '"content": ""' not in e for e in events) == 2


# --- circuit breaker and mid-stream failover ------------------------------------------
# daphne runs with the default breaker settings (5 failures in 60 s open a circuit for
# 30 s); the tests read the circuits through the same Redis.


def test_failing_instance_opens_its_circuit_and_is_then_skipped(live_server_url,
                                                                openai_server, secret):
    failures = settings.OPENCLAW_BREAKER_FAILURES
    broken = endpoint(openai_server, "balanced", "error-500", weight=5)
    ModelEndpoint.objects.create(name="balanced", engine="openai", upstream_model="echo",
                                 endpoint_url=f"{openai_server.url}/chat/completions")
    api = client(live_server_url, secret)

    answers = []
    for _ in range(failures * 10):  # the broken instance is tried first about 5 times in 6
        answers.append(api.chat.completions.create(model="balanced", messages=HELLO))
        if Breaker().state(broken.pk).state == CircuitState.OPEN:
            break
    assert Breaker().state(broken.pk).state == CircuitState.OPEN
    assert len(openai_server.requests_for("error-500")) == failures
    openai_server.reset()
    after = [api.chat.completions.create(model="balanced", messages=HELLO)
             for _ in range(5)]
    broken.refresh_from_db()

    assert len(openai_server.requests_for("error-500")) == 0  # skipped, not called
    assert [r.model for r in openai_server.requests] == ["echo"] * 5
    assert {a.choices[0].message.content for a in answers + after} == {"echo: hello there"}
    assert broken.health == HealthState.UNHEALTHY
    assert "circuit open" in broken.health_detail


def test_route_whose_every_circuit_is_open_is_answered_503(live_server_url, openai_server,
                                                           secret):
    failures = settings.OPENCLAW_BREAKER_FAILURES
    endpoint(openai_server, "doomed", "error-503")
    api = client(live_server_url, secret)
    for _ in range(failures):
        with pytest.raises(openai.APIStatusError):
            api.chat.completions.create(model="doomed", messages=HELLO)
    openai_server.reset()

    with pytest.raises(openai.InternalServerError) as refused:
        api.chat.completions.create(model="doomed", messages=HELLO)

    assert refused.value.status_code == 503
    assert refused.value.code == "no_available_instance"
    assert "circuit open" in refused.value.message
    assert openai_server.requests == []


def test_stream_dropped_mid_answer_is_continued_by_the_fallback(live_server_url,
                                                                openai_server, secret):
    RoutingRule.objects.create(name="Cut with rescue", priority=10,
                               condition={"field": "model", "op": "eq", "value": "cut"},
                               target_model="cut", fallbacks=["rescue"])
    endpoint(openai_server, "cut", "tokens-8+drop-after-5")
    endpoint(openai_server, "rescue", "echo")

    response = httpx.post(f"{live_server_url}/v1/chat/completions", timeout=20,
                          headers={"Authorization": f"Bearer {secret}"},
                          json={"model": "cut", "messages": HELLO, "stream": True})
    events = [json.loads(line[6:]) for line in response.text.split("\n\n")
              if line.startswith("data: {")]

    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    partial = "echo: hello there echo: hello"
    continued = openai_server.requests_for("echo")[0].body["messages"]
    assert not any("error" in e for e in events)
    assert text == partial + "echo: " + gateway.CONTINUE_PROMPT
    assert continued[:-2] == HELLO
    assert continued[-2] == {"role": "assistant", "content": partial}
    assert continued[-1] == {"role": "user", "content": gateway.CONTINUE_PROMPT}
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["x_openclaw"]["models"] == ["cut", "rescue"]
    assert events[-1]["x_openclaw"]["models_tried"] == ["cut", "rescue"]


# --- balancing and retries --------------------------------------------------------------


def test_half_failing_instances_answer_every_request_through_fallbacks(live_server_url,
                                                                       openai_server, secret):
    # given a model whose two instances fail half their calls, and a steady fallback
    RoutingRule.objects.create(name="Halves with steady", priority=10,
                               condition={"field": "model", "op": "eq", "value": "halves"},
                               target_model="halves", fallbacks=["steady"])
    endpoint(openai_server, "halves", "flaky-50+one", balancing="least_busy")
    ModelEndpoint.objects.create(name="halves", engine="openai", upstream_model="flaky-50+two",
                                 endpoint_url=f"{openai_server.url}/chat/completions")
    endpoint(openai_server, "steady", "echo")
    api = client(live_server_url, secret)

    # when 200 requests are sent
    answered_by = []
    for _ in range(200):
        raw = api.chat.completions.with_raw_response.create(model="halves", messages=HELLO)
        assert raw.parse().choices[0].message.content == "echo: hello there"
        answered_by.append(raw.headers["x-openclaw-model"])

    # then all 200 succeeded, and the flaky instances really failed along the way
    flaky_calls = sum(len(openai_server.requests_for(f"flaky-50+{tag}"))
                      for tag in ("one", "two"))
    assert len(answered_by) == 200
    assert flaky_calls - answered_by.count("halves") > 0  # failed calls, then fallbacks
    assert "steady" in answered_by


def test_transient_backend_error_is_retried_once_on_the_same_instance(live_server_url,
                                                                      openai_server, secret):
    endpoint(openai_server, "shaky", "error-503")

    with pytest.raises(openai.APIStatusError):
        client(live_server_url, secret).chat.completions.create(model="shaky", messages=HELLO)

    assert len(openai_server.requests_for("error-503")) == 2  # the call and one retry


def test_rotated_key_is_told_and_fetches_its_successor_once(live_server_url, openai_server):
    # given: a key rotated by the beat task, nobody watching
    old_key, old_secret = create_key("rotating", rotation_hours=1)
    ModelEndpoint.objects.create(name="echo", engine="echo")
    old_key.created_at = old_key.created_at.replace(year=old_key.created_at.year - 1)
    old_key.save(update_fields=["created_at"])
    from routing.keys import rotate_due_keys

    assert len(rotate_due_keys()) == 1

    # when: the old key, still in its grace period, is used
    answer = client(live_server_url, old_secret).chat.completions.with_raw_response.create(
        model="echo", messages=HELLO)

    # then: the answer says so, and the old key fetches the new secret exactly once
    assert answer.headers["x-openclaw-key-rotated"].startswith("grace-until=")
    headers = {"Authorization": f"Bearer {old_secret}"}
    handed = httpx.post(f"{live_server_url}/v1/key/successor", headers=headers)
    assert handed.status_code == 200
    new_secret = handed.json()["key"]
    assert new_secret != old_secret
    again = httpx.post(f"{live_server_url}/v1/key/successor", headers=headers)
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "no_successor"
    fresh = client(live_server_url, new_secret).chat.completions.with_raw_response.create(
        model="echo", messages=HELLO)
    assert "x-openclaw-key-rotated" not in fresh.headers


def test_key_changes_reach_the_servers_copy_of_the_key_on_the_next_request(
        live_server_url, openai_server):
    """The web process keeps the keys it has seen; a save, a bulk update followed by
    ``keys_changed`` or a revocation anywhere is seen by its very next request."""
    from routing.keys import keys_changed, revoke_key

    endpoint(openai_server, "alpha", "echo")
    endpoint(openai_server, "beta", "echo")
    key, secret = create_key("edited")
    api = client(live_server_url, secret)
    assert api.chat.completions.create(model="beta", messages=HELLO).choices  # now cached

    key.allowed_models = ["alpha"]
    key.save()
    with pytest.raises(openai.PermissionDeniedError):
        api.chat.completions.create(model="beta", messages=HELLO)

    type(key).objects.filter(pk=key.pk).update(allowed_models=[])
    keys_changed()
    assert api.chat.completions.create(model="beta", messages=HELLO).choices

    revoke_key(key)
    with pytest.raises(openai.AuthenticationError) as refused:
        api.chat.completions.create(model="beta", messages=HELLO)
    assert refused.value.code == "revoked_api_key"


def test_repeated_temperature_zero_request_is_answered_from_the_cache(live_server_url,
                                                                     openai_server, secret):
    """The second identical temperature-0 request is a hit: the header says so, the
    metric counts it, the answer is the same, and it takes a tenth of the miss or less
    (the backend waits 200 ms before answering)."""
    endpoint(openai_server, "cached", "slowstart-200")
    api = client(live_server_url, secret)
    ask = {"model": "cached", "messages": HELLO, "temperature": 0}

    def timed():
        started = time.perf_counter()
        raw = api.chat.completions.with_raw_response.create(**ask)
        return raw, time.perf_counter() - started

    miss, miss_s = timed()
    hit, hit_s = timed()
    other = api.chat.completions.with_raw_response.create(**{**ask, "temperature": 0.5})

    assert miss.headers["x-openclaw-cache"] == "miss"
    assert hit.headers["x-openclaw-cache"] == "hit"
    assert "x-openclaw-cache" not in other.headers  # not cacheable: no look-up at all
    assert hit.parse().choices[0].message.content == miss.parse().choices[0].message.content
    assert hit.parse().id != miss.parse().id
    assert hit_s * 10 <= miss_s, (hit_s, miss_s)
    metrics = httpx.get(f"{live_server_url}/metrics").text
    assert 'openclaw_response_cache_lookups_total{result="hit"} 1.0' in metrics


def test_rule_edit_in_this_process_reroutes_the_servers_next_request(live_server_url,
                                                                     openai_server, secret):
    """The web server keeps its own copy of the rules; a save here (what the admin
    does) reaches its very next request, with no restart."""
    endpoint(openai_server, "first", "echo")
    endpoint(openai_server, "second", "echo")
    rule = RoutingRule.objects.create(name="pick", priority=1, condition={},
                                      target_model="first")
    api = client(live_server_url, secret)

    def answered() -> str:
        raw = api.chat.completions.with_raw_response.create(model="anything", messages=HELLO)
        return raw.headers["x-openclaw-model"]

    before = [answered() for _ in range(3)]
    rule.target_model = "second"
    rule.save()
    after = answered()
    rule.enabled = False
    rule.save()
    with pytest.raises(openai.NotFoundError):  # no rule: "anything" is served as asked
        answered()

    assert (before, after) == (["first"] * 3, "second")
