"""The deployment files under deploy/: Prometheus rules and their unit tests through
promtool, every metric they and the Grafana dashboard use is one /metrics exports,
the compose file parses and references only real images and env vars OpenClaw reads,
and the Dockerfiles are multi-stage, non-root and health-checked."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from core.metrics import SystemCollector
from tests.stand_ins.nvml import FakeNvml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Third-party images the deployment uses: Docker Hub repositories, pinned tags.
DOCKER_HUB_IMAGES = {
    "pgvector/pgvector": {"pg17"},
    "redis": {"7.4-alpine"},
    "prom/prometheus": {"v2.53.3"},
    "grafana/grafana": {"11.3.0"},
    "nginx": {"1.27-alpine"},
    "python": {"3.11-slim-bookworm"},
    "nvidia/cuda": {"12.8.1-devel-ubuntu24.04", "12.8.1-runtime-ubuntu24.04"},
}
OUR_IMAGES = {"openclaw", "openclaw-cpu", "openclaw-gpu"}


def tool(name: str) -> str:
    """The path of a command-line tool; CI must have it (tests/debian-packages.txt)."""
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is missing: tests/run.sh installs it from "
                        "tests/debian-packages.txt")
        pytest.skip(f"{name} is not installed (apt-get install the package named in "
                    "tests/debian-packages.txt)")
    return path


def run(*argv: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


# --- Prometheus ------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check():
    result = run(tool("promtool"), "check", "rules", "prometheus/alerts.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_alert_rules_pass_their_promtool_unit_tests():
    result = run(tool("promtool"), "test", "rules", "prometheus/alerts_test.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_scrape_config_passes_promtool_check():
    result = run(tool("promtool"), "check", "config", "prometheus/prometheus.yml")

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_and_the_issue_names_are_there():
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    tests = yaml.safe_load((DEPLOY / "prometheus/alerts_test.yml").read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]}

    assert set(alerts) == tested
    assert {"HighLatency", "HighErrorRate", "ModelInstanceDown", "CircuitOpen", "QueueBacklog",
            "GPUMemoryHigh", "BudgetNearlySpent"} <= set(alerts)
    latency = alerts["HighLatency"]
    assert (latency["for"], latency["labels"]["severity"]) == ("5m", "critical")
    assert "histogram_quantile(0.95" in latency["expr"] and "> 2" in latency["expr"]


METRIC = re.compile(r"\b((?:openclaw|process|django)_[a-z_]+)")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def family_of(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def used_metrics() -> dict[str, set[str]]:
    """{file: metric families its expressions read}."""
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    dashboard = json.loads((DEPLOY / "grafana/dashboard.json").read_text())
    exprs = {
        "alerts.yml": [rule["expr"] for group in rules["groups"] for rule in group["rules"]],
        "dashboard.json": [target["expr"] for panel in dashboard["panels"]
                           for target in panel.get("targets", [])],
    }
    return {name: {family_of(m) for expr in found for m in METRIC.findall(expr)}
            for name, found in exprs.items()}


@pytest.mark.django_db
def test_alerts_and_dashboard_use_only_metrics_that_are_exported():
    # given: what /metrics exports, with a GPU as NVML reports one (stand-in)
    text = Client().get("/metrics").content.decode()
    gpu = SystemCollector()
    gpu._nvml = FakeNvml()
    exported = {family.name for family in text_string_to_metric_families(text)}
    exported |= {metric.name for metric in gpu._gpus()}

    # then
    for name, families in used_metrics().items():
        assert families, name
        assert families <= exported, f"{name} uses {sorted(families - exported)}"


def test_dashboard_is_grafana_json_against_the_provisioned_datasource():
    dashboard = json.loads((DEPLOY / "grafana/dashboard.json").read_text())
    source = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
                            .read_text())["datasources"][0]

    assert dashboard["uid"] == "openclaw" and dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == source["uid"]


# --- compose ------------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _sep, value = line.partition("=")
            pairs[name.strip()] = value
    return pairs


def names_openclaw_reads() -> set[str]:
    """Environment variables settings.py (and the openclaw command) read."""
    source = ((REPO / "openclaw_site/settings.py").read_text()
              + (REPO / "openclaw_site/cli.py").read_text())
    return set(re.findall(r"""(?:env_\w+|os\.environ\.get)\(\s*["']([A-Z0-9_]+)["']""",
                          source))


def test_compose_file_passes_the_compose_cli():
    cli = shutil.which("docker")
    argv = None
    if cli and run(cli, "compose", "version").returncode == 0:
        argv = [cli, "compose"]
    elif shutil.which("docker-compose") or IN_CI:
        argv = [tool("docker-compose")]
    else:
        pytest.skip("neither `docker compose` nor docker-compose is installed")

    for profiles in ([], ["--profile", "gpu", "--profile", "tls"]):
        result = run(*argv, "-f", "docker-compose.yml", "--env-file", ".env.example",
                     *profiles, "config", "-q")
        assert result.returncode == 0, result.stdout + result.stderr


def test_compose_has_the_services_the_deployment_needs():
    services = compose()["services"]

    assert {"gateway", "worker-cpu", "worker-gpu", "beat", "postgres", "redis", "prometheus",
            "grafana", "migrate"} <= set(services)
    assert services["gateway"]["deploy"]["replicas"] == 2
    device = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert (device["driver"], device["count"], device["capabilities"]) == ("nvidia", 1, ["gpu"])
    assert "--pool" in services["worker-gpu"]["command"]
    assert services["worker-gpu"]["command"][services["worker-gpu"]["command"].index(
        "--queues") + 1] == "gpu"
    for name in ("gateway", "worker-cpu", "worker-gpu", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully")
    assert services["worker-cpu"]["healthcheck"]["test"]


def test_compose_images_exist_on_docker_hub_or_are_built_here():
    for name, service in compose()["services"].items():
        image = service["image"]
        repository, _sep, tag = image.partition(":")
        if "build" in service:
            assert repository in OUR_IMAGES, name
            continue
        assert repository in DOCKER_HUB_IMAGES, f"{name}: {image} is not a known image"
        assert tag in DOCKER_HUB_IMAGES[repository], f"{name}: pin a known tag of {repository}"


def test_compose_passes_only_environment_openclaw_reads():
    reads = names_openclaw_reads()
    for name, service in compose()["services"].items():
        if "build" not in service:
            continue
        passed = set(service["environment"])
        assert passed - reads == set(), f"{name} sets variables nothing reads"
    interpolated = set(re.findall(r"\$\{([A-Z0-9_]+)", (DEPLOY / "docker-compose.yml")
                                  .read_text()))
    assert interpolated <= set(env_example()), "every ${VAR} is explained in .env.example"
    assert {"OPENCLAW_ENV", "DATABASE_URL", "SECRET_KEY", "OPENCLAW_ENCRYPTION_KEYS"} <= reads


# --- Dockerfiles ----------------------------------------------------------------------------------


def stages(path: Path) -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split into stages."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    found: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            found.append([])
        if found:
            found[-1].append(line)
    return found


def base_images(path: Path) -> set[str]:
    text = path.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.MULTILINE))
    images = set()
    for base in re.findall(r"^FROM (\S+)", text, re.MULTILINE):
        images.add(args.get(base.strip("${}"), base))
    return images


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile_is_multi_stage_non_root_and_health_checked(name):
    path = DEPLOY / name
    *builders, final = stages(path)

    assert builders, "a build stage"
    assert any("build-essential" in line for line in builders[0])
    assert not any("build-essential" in line or "-dev" in line for line in final)
    user = [line.split()[1] for line in final if line.startswith("USER ")]
    assert user and user[-1] not in {"root", "0"}
    health = [line for line in final if line.startswith("HEALTHCHECK ")]
    assert health and ("/healthz" in health[0] or "/metrics" in health[0])
    for image in base_images(path):
        repository, _sep, tag = image.partition(":")
        assert tag in DOCKER_HUB_IMAGES.get(repository, set()), image


def test_gateway_image_health_check_is_healthz_and_image_context_skips_secrets():
    final = stages(DEPLOY / "Dockerfile")[-1]
    ignored = (REPO / ".dockerignore").read_text().splitlines()

    assert any("/healthz" in line for line in final if line.startswith("HEALTHCHECK"))
    assert {".git", ".venv", "deploy/.env", "deploy/nginx/certs"} <= set(ignored)


def test_tls_front_refuses_protocols_below_tls_1_2():
    conf = (DEPLOY / "nginx/openclaw.conf").read_text()

    protocols = re.search(r"^\s*ssl_protocols ([^;]+);", conf, re.MULTILINE).group(1).split()
    assert protocols == ["TLSv1.2", "TLSv1.3"]
    assert re.search(r"location = /metrics \{\s*return 404;", conf)
