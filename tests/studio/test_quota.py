"""A signed-in user's studio quota in a real browser (Debian's Chromium through
Playwright) against the live web server and the loopback OpenAI server: the quota bar
shows the budget used, moves after each turn, and when it is spent the next turn is
refused with ``/v1``'s code and a clear message; a reload shows it spent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from routing.models import ModelEndpoint
from routing.quota_models import Quota, QuotaTarget
from tests.studio.conftest import sign_in

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("quiet_server_env")]
PASSWORD = "quota-pass-1"
BUDGET = 60


@pytest.fixture
def page(browser, live_server_url, openai_server):
    quinn = get_user_model().objects.create_user("quinn", password=PASSWORD)
    Quota.objects.create(target=QuotaTarget.USER, user=quinn, token_budget=BUDGET,
                         budget_period="day")
    ModelEndpoint.objects.create(name="loopback", engine="openai", upstream_model="echo",
                                 endpoint_url=openai_server.url)
    context = browser.new_context(viewport={"width": 1100, "height": 700}, locale="en-US")
    page = context.new_page()
    sign_in(page, f"{live_server_url}/studio/", "quinn", PASSWORD)
    yield page
    context.close()


def used(page) -> int:
    return int(page.get_attribute("#quota-bar", "aria-valuenow") or 0)


def send(page, text: str) -> None:
    page.fill("#prompt", text)
    page.keyboard.press("Enter")


def test_quota_bar_moves_each_turn_and_a_spent_budget_is_refused_clearly(page, tmp_path):
    # given: the bar shows the untouched budget
    assert page.is_visible("#quota")
    assert page.inner_text("#quota-label") == f"Budget: 0 of {BUDGET} tokens per day"

    # when: turns until the budget refuses one (each answer is a few words)
    seen = [0]
    for turn in range(12):
        before = page.locator(".msg.assistant").count()
        send(page, f"question number {turn} about quotas")
        page.locator(".msg.assistant").nth(before).wait_for(timeout=15000)
        refused = page.locator(".msg.assistant.error")
        if refused.count():
            break
        page.wait_for_function(f"() => Number(document.getElementById('quota-bar')"
                               f".getAttribute('aria-valuenow')) > {seen[-1]}")
        seen.append(used(page))
    else:
        pytest.fail(f"never refused; the bar went {seen}")

    # then: the bar moved after every answered turn, and the refusal says why
    assert len(seen) >= 3 and seen == sorted(set(seen)), seen
    assert refused.last.get_attribute("data-code") == "budget_exhausted"
    assert f"Token budget of {BUDGET} per day is spent" in refused.last.inner_text()
    assert "spent" in page.get_attribute("#quota", "class")
    assert "spent; renews in" in page.inner_text("#quota-label")
    assert "is spent" in page.inner_text("#status")
    shots = Path(os.environ.get("OPENCLAW_TEST_SHOTS") or tmp_path)
    page.wait_for_timeout(400)  # the bar's transition
    page.screenshot(path=str(shots / "studio-quota.png"))

    # when: the page is opened again, its bar starts where the budget stands
    page.reload()
    page.wait_for_selector("body[data-ready]")
    assert used(page) == min(seen[-1], BUDGET)
