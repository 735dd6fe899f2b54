"""A workflow's human-approval stop in the studio, in Chromium against the live web
server and the loopback OpenAI server: the card shows the reviewer's question and the
draft as text (not a raw value), with Approve / Edit / Reject that disable once used;
an edit sends the corrected draft; the approved answer is shown once. Screenshots go to
the temporary folder, not docs/."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from routing.models import ModelEndpoint
from tests.studio.conftest import sign_in

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("quiet_server_env")]
REPO = Path(__file__).resolve().parents[2]
SHOTS = Path(tempfile.gettempdir())
PASSWORD = "review-pass-1"


@pytest.fixture
def page(browser, live_server_url, openai_server):
    get_user_model().objects.create_user("rita", password=PASSWORD)
    ModelEndpoint.objects.create(name="loopback", engine="openai", upstream_model="echo",
                                 endpoint_url=openai_server.url)
    call_command("loaddata", str(REPO / "fixtures" / "50_workflows.json"), verbosity=0)
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, f"{live_server_url}/studio/", "rita", PASSWORD)
    page.errors = errors
    page.select_option("#model", "loopback")
    page.select_option("#workflow", "support-triage")
    yield page
    context.close()


def ask(page, text: str):
    page.fill("#prompt", text)
    page.keyboard.press("Enter")
    card = page.locator(".msg.approval-card").last
    card.locator("button.approve").wait_for(timeout=15000)
    return card


def test_the_card_shows_the_question_and_the_draft_and_approving_answers_once(page):
    card = ask(page, "I want a refund please")
    assert card.locator(".approval-prompt").inner_text() == \
        "A refund answer needs approval: approve, edit or reject it."
    draft = card.locator(".approval-draft").inner_text()
    assert draft.startswith("echo:") and "{" not in draft
    page.screenshot(path=str(SHOTS / "openclaw-approval-card.png"))

    card.locator("button.approve").click()

    assert card.locator(".approval-actions button:disabled").count() == 4
    page.locator(".msg.assistant .actions .meta").last.wait_for(timeout=15000)
    answers = page.locator(".msg.assistant .body").all_inner_texts()
    page.screenshot(path=str(SHOTS / "openclaw-approval-approved.png"))
    assert answers == [draft]  # the draft's card became the answer: shown once
    assert page.errors == []


def test_an_edit_sends_the_corrected_draft_and_a_rejection_its_reason(page):
    card = ask(page, "refund for order 7")
    card.locator("button.edit").click()
    card.locator("textarea.approval-edit").fill("Your refund is on its way.")
    card.locator("button.approve-edit").click()
    page.locator(".msg.assistant .actions .meta").last.wait_for(timeout=15000)
    assert page.locator(".msg.assistant .body").last.inner_text() == \
        "Your refund is on its way."

    card = ask(page, "another refund")
    page.once("dialog", lambda dialog: dialog.accept("not this one"))
    card.locator("button.reject").click()
    page.locator(".msg.assistant.error").last.wait_for(timeout=15000)
    assert "not this one" in page.locator(".msg.assistant.error").last.inner_text()
    assert card.locator(".approval-actions button:disabled").count() == 4
    assert page.errors == []


def test_the_cards_buttons_speak_chinese(page):
    page.click("#lang-zh")
    page.wait_for_selector("body[data-ready]")
    page.select_option("#model", "loopback")
    page.select_option("#workflow", "support-triage")
    card = ask(page, "refund")
    card.locator("button.edit").click()
    labels = card.locator(".approval-actions button:visible").all_inner_texts()
    assert labels and all(re.search(r"[\u4e00-\u9fff]", label) for label in labels), labels
    assert re.search(r"[\u4e00-\u9fff]", card.locator("textarea.approval-edit")
                     .get_attribute("aria-label"))
    assert page.errors == []


def test_the_graph_panel_draws_a_workflow_in_the_order_it_runs(page):
    page.click("#toggle-panel")

    def top(node: str) -> float:
        return float(page.locator(f'#graph .node[data-node="{node}"] rect')
                     .get_attribute("y"))

    # support-triage: a condition sends refunds to a draft a person reviews, the rest to
    # an answer; both go on to post-processing and memory
    for earlier, later in (("recall", "triage"), ("triage", "draft"), ("draft", "review"),
                           ("review", "post_process"), ("answer", "post_process"),
                           ("post_process", "remember")):
        assert top(earlier) < top(later), (earlier, later)
    page.screenshot(path=str(SHOTS / "openclaw-graph-triage.png"))
    # the default workflow: the agent's review and tool steps right below it
    page.select_option("#workflow", "conversation")
    assert top("generate") < top("generate__review") < top("generate__tools") \
        < top("post_process") < top("remember")
