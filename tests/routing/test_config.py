"""`openclaw config apply/export` and `openclaw models list` on the real database."""

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from routing.config import ConfigError, apply_config, export_config
from routing.models import ModelEndpoint

pytestmark = pytest.mark.django_db

SEED = (Path(__file__).resolve().parents[2] / "fixtures" / "seed-models.yaml").read_text()
ENV = {"YOUR_API_KEY": "sk-seed-secret-000111"}


def snapshot() -> list[tuple]:
    return list(ModelEndpoint.objects.order_by("pk").values_list(
        "name", "engine", "endpoint_url", "model_path", "weight", "context_window", "enabled"))


def test_seed_example_applies_unchanged():
    report = apply_config(SEED, environ=ENV)

    assert sorted(report.created) == ["cloud-32k (https://api.example.com/v1/chat)",
                                      "local-7b (/models/llama-7b)"]
    cloud = ModelEndpoint.objects.get(name="cloud-32k")
    local = ModelEndpoint.objects.get(name="local-7b")
    assert (cloud.engine, cloud.api_key) == ("openai", "sk-seed-secret-000111")
    assert (local.engine, local.gpu_id, local.model_path) == ("tensorrt_llm", 0,
                                                              "/models/llama-7b")
    # the folder is not on this machine: a warning, not a refusal
    assert any("local-7b" in w and "does not exist" in w for w in report.warnings)


def test_applying_twice_changes_nothing_and_edits_update_in_place():
    apply_config(SEED, environ=ENV)
    again = apply_config(SEED, environ=ENV)
    assert again.created == [] and again.updated == [] and len(again.unchanged) == 2

    edited = apply_config(SEED.replace("gpu_id: 0", "gpu_id: 1"), environ=ENV)

    assert edited.updated == ["local-7b (/models/llama-7b)"]
    assert ModelEndpoint.objects.get(name="local-7b").gpu_id == 1
    assert ModelEndpoint.objects.count() == 2


def test_extra_keys_of_ours_and_env_forms():
    text = """
models:
  - name: big
    type: remote
    endpoint: ${BASE}/v1
    model: gpt-4o
    context_window: 32768
    weight: 3
    warm: true
    max_batch: 16
    params: {temperature: 0.2, stop: ["$$END"]}
    timeouts: {connect: 2, first_byte: 10, total: 60}
  - name: small
    type: local
    engine: vllm
    path: /srv/qwen
"""
    apply_config(text, environ={"BASE": "http://gpu-box:9000"})

    big = ModelEndpoint.objects.get(name="big")
    assert big.endpoint_url == "http://gpu-box:9000/v1"
    assert (big.upstream_model, big.context_window, big.weight, big.warm, big.max_batch) == (
        "gpt-4o", 32768, 3, True, 16)
    assert big.default_params == {"temperature": 0.2, "stop": ["$END"]}
    assert (big.connect_timeout, big.first_byte_timeout, big.total_timeout) == (2, 10, 60)
    small = ModelEndpoint.objects.get(name="small")
    assert (small.engine, small.endpoint_url, small.upstream_model) == (
        "vllm", "http://127.0.0.1:8001/v1", "/srv/qwen")


@pytest.mark.parametrize(("text", "line", "message"), [
    ("models:\n  - name: a\n    type: remote\n    endpont: http://x/v1\n", 4,
     "unknown key 'endpont'"),
    ("models:\n  - name: a\n    type: remote\n    endpoint: http://x/v1\n    weight: heavy\n",
     5, "weight must be an integer"),
    ("models:\n  - name: a\n    type: remote\n    endpoint: http://x/v1\n"
     "    auth: {type: api_key, key: $NOT_SET_ANYWHERE}\n", 5,
     "environment variable NOT_SET_ANYWHERE is not set"),
    ("models:\n  - name: a\n    type: cloud\n", 3, "type must be remote or local"),
    ("models:\n  - name: a\n    type: local\n    path: /m\n", 3, "a local model needs engine"),
    ("models:\n  - type: remote\n    endpoint: http://x/v1\n", 2, "missing required key 'name'"),
    ("models:\n  - name: a\n    type: remote\n", 2, "endpoint: An openai endpoint needs its URL"),
    ("models:\n  - name: a\n    type: remote\n    endpoint: not a url\n", 4,
     "endpoint: Enter an http:// or https:// URL with a host"),
    ("models:\n  - name: a\n    type: remote\n    endpoint: ftp://x/v1\n", 4, "endpoint:"),
    ("models:\n  - name: a\n    type: remote\n    endpoint: http://x/v1\n"
     "    params: {temprature: 1}\n", 5, "Unknown parameter “temprature”"),
    ("routes: []\n", 1, "unknown top-level key 'routes'"),
    ("models: [\n", 2, "not valid YAML"),
])
def test_bad_file_is_refused_with_its_line_and_changes_nothing(text, line, message):
    with pytest.raises(ConfigError) as caught:
        apply_config(text, source="bad.yaml", environ=ENV)

    problems = caught.value.problems
    assert any(pline == line and message in pmsg for pline, pmsg in problems), problems
    assert ModelEndpoint.objects.count() == 0


def test_a_bad_entry_stops_the_good_ones_in_the_same_file():
    apply_config(SEED, environ=ENV)
    before = snapshot()
    text = SEED.replace("gpu_id: 0", "gpu_id: 3") + "  - name: broken\n    type: remote\n"

    with pytest.raises(ConfigError, match="needs its URL"):
        apply_config(text, environ=ENV)

    assert snapshot() == before
    assert ModelEndpoint.objects.get(name="local-7b").gpu_id == 0


def test_duplicate_instance_in_one_file_is_refused():
    text = "models:\n  - {name: a, type: remote, endpoint: 'http://x/v1'}\n" \
           "  - {name: a, type: remote, endpoint: 'http://x/v1'}\n"
    with pytest.raises(ConfigError, match="already defined on line 2"):
        apply_config(text, environ={})


def test_same_name_at_another_endpoint_is_a_second_instance():
    text = "models:\n  - {name: a, type: remote, endpoint: 'http://x/v1'}\n" \
           "  - {name: a, type: remote, endpoint: 'http://y/v1/chat/completions'}\n"
    apply_config(text, environ={})
    assert ModelEndpoint.objects.filter(name="a").count() == 2


def test_export_never_prints_secrets_and_applies_back_unchanged():
    apply_config(SEED, environ=ENV)

    exported = export_config()

    assert "sk-seed-secret" not in exported
    assert "${CLOUD_32K_API_KEY}" in exported
    report = apply_config(exported, environ={"CLOUD_32K_API_KEY": ENV["YOUR_API_KEY"]})
    assert report.created == [] and report.updated == []


def test_tool_format_applies_and_exports_like_the_other_fields():
    text = ("models:\n  - name: qwen\n    type: local\n    engine: transformers\n"
            "    path: /models/qwen\n    tool_format: hermes\n")

    apply_config(text, environ={})
    exported = export_config()

    assert ModelEndpoint.objects.get(name="qwen").tool_format == "hermes"
    assert "tool_format: hermes" in exported
    assert apply_config(exported, environ={}).unchanged == ["qwen (/models/qwen)"]


def test_unknown_tool_format_is_refused_on_its_line():
    text = ("models:\n  - name: qwen\n    type: local\n    engine: transformers\n"
            "    path: /models/qwen\n    tool_format: xml\n")

    with pytest.raises(ConfigError) as caught:
        apply_config(text, environ={})

    assert any(line == 6 and "tool_format:" in message and "xml" in message
               for line, message in caught.value.problems), caught.value.problems


def test_dry_run_reports_without_writing():
    report = apply_config(SEED, environ=ENV, dry_run=True)
    assert len(report.created) == 2
    assert ModelEndpoint.objects.count() == 0


def test_cli_apply_list_and_refusal(tmp_path, monkeypatch):
    monkeypatch.setenv("YOUR_API_KEY", "sk-cli-secret-9999")
    seed = tmp_path / "models.yaml"
    seed.write_text(SEED)
    out = StringIO()

    call_command("config", "apply", str(seed), stdout=out, stderr=StringIO())
    assert "2 created, 0 updated, 0 unchanged" in out.getvalue()

    listing = StringIO()
    call_command("models", "list", stdout=listing)
    assert "cloud-32k" in listing.getvalue() and "tensorrt_llm" in listing.getvalue()
    assert "sk-cli-secret" not in listing.getvalue()

    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: x\n    type: remote\n    colour: red\n")
    with pytest.raises(CommandError, match=r"bad.yaml:4: unknown key 'colour'"):
        call_command("config", "apply", str(bad), stdout=StringIO(), stderr=StringIO())

    exported = StringIO()
    call_command("config", "export", stdout=exported)
    assert "sk-cli-secret" not in exported.getvalue()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM routing_modelendpoint WHERE api_key LIKE '%sk-cli%'")
        assert cursor.fetchone()[0] == 0
