"""The workflow editor's Run tab in a real browser (Debian's Chromium through
Playwright) against the live web server: the demo's approval workflow run from the
panel's chat — its nodes light up on the canvas with their timings, the review waits
with Approve / Edit / Reject until approved, the answer streams in —, a step (or a node
clicked on the canvas) shows its input and output state, and a fork from the second
step replays the run in a branch, the nodes lighting up again. In English and 中文
(docs/editor-run.png)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from chat.models import Conversation, Workflow
from routing.models import ModelEndpoint
from tests.studio.conftest import page_in, sign_in

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("quiet_server_env")]
REPO = Path(__file__).resolve().parents[2]
SHOT = REPO / "docs" / "editor-run.png"
PASSWORD = "run-pass-1"
QUESTION = "I want a refund please"
CHINESE = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture
def editor(browser, live_server_url):
    """``editor(language)``: the support-triage workflow open in the editor, its Run
    tab shown, for a superuser in ``language``; page errors in ``page.errors``."""
    get_user_model().objects.create_superuser("ada", "ada@example.com", PASSWORD)
    ModelEndpoint.objects.create(name="echo", engine="echo")
    call_command("loaddata", str(REPO / "fixtures" / "50_workflows.json"), verbosity=0)
    contexts = []

    def open_editor(language: str):
        page = page_in(browser, live_server_url, language, contexts)
        sign_in(page, f"{live_server_url}/studio/workflows/support-triage/", "ada", PASSWORD)
        page.wait_for_selector(".wf-editor[data-ready] .react-flow__node[data-id=review]")
        page.locator("#tab-run").click()
        page.locator(".run-panel .run-model").select_option("echo")
        return page

    yield open_editor
    for context in contexts:
        context.close()


def card(page, node_id: str):
    return page.locator(f".react-flow__node[data-id='{node_id}'] .wf-node")


def lit(page, node_id: str, status: str) -> None:
    """Wait until ``node_id`` shows the run's ``status`` on the canvas."""
    page.locator(f".react-flow__node[data-id='{node_id}'] .wf-node.status-{status}").wait_for(
        timeout=15000)


def step(page, node_id: str):
    return page.locator(f".run-step[data-node='{node_id}']").last


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_a_run_lights_up_the_canvas_waits_for_approval_and_forks(editor, language):
    page = editor(language)
    panel = page.locator(".run-panel")

    # when: a refund question is sent from the Run tab
    panel.locator(".run-input").fill(QUESTION)
    panel.locator(".run-input").press("Enter")

    # then: the nodes it ran light up with their timings; the review waits for a person
    for node_id in ("recall", "pre_process", "triage", "draft"):
        lit(page, node_id, "done")
    lit(page, "review", "waiting")
    assert re.search(r"\d+ (ms|毫秒)", card(page, "draft").locator(".wf-status").inner_text())
    assert card(page, "answer").locator(".wf-status").count() == 0  # not on this path
    approval = panel.locator(".run-approval")
    approval.locator("button.approve").wait_for(timeout=15000)
    assert approval.locator(".approval-prompt").inner_text() == \
        "A refund answer needs approval: approve, edit or reject it."
    assert approval.locator(".approval-draft").inner_text() == QUESTION
    labels = approval.locator(".approval-actions button").all_inner_texts()
    assert len(labels) == 3
    if language == "zh-hans":
        assert all(CHINESE.search(label) for label in labels), labels

    # when: the draft is approved
    approval.locator("button.approve").click()

    # then: the card is spent, the run goes on to the end and the answer is shown
    assert approval.locator(".approval-actions button:disabled").count() == 3
    answer = panel.locator(".run-msg.assistant.done")
    answer.wait_for(timeout=15000)
    assert answer.locator(".run-text").inner_text() == QUESTION
    for node_id in ("review", "post_process", "remember"):
        lit(page, node_id, "done")

    # when: the triage step is clicked, its input and output state are shown
    step(page, "triage").wait_for(timeout=15000)
    step(page, "triage").click()
    detail = panel.locator(".run-step-detail")
    assert detail.locator(".step-detail-head strong").inner_text() == "triage"
    detail.locator(".step-output details summary").first.wait_for()
    output = detail.locator(".step-output").inner_text()
    assert "outputs" in output and "draft" in output
    detail.locator(".step-input summary").first.click()  # the state before: closed at first
    assert "message" in detail.locator(".step-input").inner_text()
    # and a node clicked on the canvas shows its own step
    page.locator(".react-flow__node[data-id='draft']").click()
    page.locator("#tab-run").click()
    assert detail.locator(".step-detail-head strong").inner_text() == "draft"
    assert "reply" in detail.locator(".step-output").inner_text()
    if language == "en":
        page.screenshot(path=str(SHOT))
    parent = Conversation.objects.get(user="ada", parent=None)
    parent_turns = parent.messages.count()

    # when: the run is forked from its second step (after recall)
    panel.locator(".run-step").nth(1).click()
    assert panel.locator(".run-step-detail .step-detail-head strong").inner_text() == "recall"
    panel.locator(".run-step-detail button.fork").click()

    # then: the branch runs on from there: the canvas is cleared, the nodes after the
    # fork light up again (recall, before it, stays dark), and the run waits again
    card(page, "recall").locator(".wf-status").wait_for(state="detached", timeout=15000)
    lit(page, "review", "waiting")
    for node_id in ("pre_process", "triage", "draft"):
        lit(page, node_id, "done")
    assert card(page, "recall").locator(".wf-status").count() == 0
    panel.locator(".run-approval button.approve").click()
    panel.locator(".run-msg.assistant.done").wait_for(timeout=15000)
    lit(page, "remember", "done")
    branch = Conversation.objects.get(user="ada", parent=parent)
    assert branch.workflow == Workflow.objects.get(slug="support-triage")
    assert list(branch.messages.order_by("turn", "id").values_list("role", "content")) == [
        ("user", QUESTION), ("assistant", QUESTION)]
    # and the parent run is as it was; both are in the past runs' picker
    assert parent.messages.count() == parent_turns
    panel.locator(".run-step[data-node='remember']").wait_for(timeout=15000)
    picker = panel.locator(".run-picker option")
    assert picker.count() >= 3  # "a new run", the run and its branch
    assert page.errors == []
