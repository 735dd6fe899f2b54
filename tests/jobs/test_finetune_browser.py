"""The admin's loss chart in a real browser: a job trained in this process on the
tiny on-disk Llama, its change page opened in Debian's Chromium (Playwright, never
`playwright install`), the server-rendered SVG checked and photographed to
``docs/finetune-loss.png``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from jobs import finetune
from jobs.datasets import export_dataset
from jobs.models import FineTuneJob, FineTuneStatus
from routing.models import ModelEndpoint
from tests.chat.conftest import live_server_url  # noqa: F401  (the fixture, shared)
from tests.jobs.training_data import conversation
from tests.tiny_models import build_tiny_llama

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "finetune-loss.png"


@pytest.fixture(scope="module")
def browser(live_server_url) -> Iterator:  # noqa: F811  (the server starts first)
    """Chromium for the module; Django's sync-only guard is lifted while Playwright's
    loop runs in this thread (the test's ORM calls happen beside it)."""
    if not shutil.which(CHROMIUM):
        pytest.fail("Chromium is missing: tests/run.sh installs Debian's `chromium`")
    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def trained_job(tmp_path, settings) -> FineTuneJob:
    settings.OPENCLAW_FINETUNE_DIR = tmp_path / "ft"
    admin = get_user_model().objects.create_superuser("root", password="pw-root-123")
    conversation(admin, ("Capital of France?", "Paris."), ("And of Italy?", "Rome."))
    conversation(admin, ("Hello world", "The quick brown fox."))
    base = ModelEndpoint.objects.create(
        name="tiny", engine="transformers", context_window=512,
        model_path=str(build_tiny_llama(tmp_path / "base")))
    job = FineTuneJob.objects.create(base_endpoint=base, dataset=export_dataset("chart"),
                                     lora_rank=8, lora_alpha=32, learning_rate=3e-2,
                                     epochs=20, max_steps=48)
    finetune.run_job(job.pk)  # in this process: the chart, not the worker, is tested here
    job.refresh_from_db()
    assert job.status == FineTuneStatus.SUCCEEDED, job.error
    return job


def test_admin_draws_the_training_loss_as_an_svg_chart(browser, live_server_url,  # noqa: F811
                                                       trained_job):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(f"{live_server_url}/admin/login/?next=/admin/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-root-123")
    page.click("input[type=submit]")
    page.goto(f"{live_server_url}/admin/jobs/finetunejob/{trained_job.pk}/change/")
    chart = page.locator("figure.finetune-loss svg")
    chart.wait_for()
    points = chart.locator("polyline").get_attribute("points").split()
    assert len(points) == 48
    ys = [float(point.split(",")[1]) for point in points]
    assert sum(ys[-8:]) / 8 > sum(ys[:8]) / 8  # lower loss is drawn lower (larger y)
    assert "Training loss per step" in chart.locator("title").text_content()
    assert "48 points recorded" in page.locator("figure.finetune-loss figcaption").inner_text()
    assert page.get_by_text("tiny-ft-").count() >= 1  # the registered model's link
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.locator("#content").screenshot(path=str(SCREENSHOT))
    page.close()
