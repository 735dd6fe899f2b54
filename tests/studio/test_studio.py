"""The studio in a real browser (Debian's Chromium through Playwright) against the
live web server and the loopback OpenAI server: sign in, chat with tokens arriving
one by one, stop a generation, Enter / Shift+Enter, the graph panel lighting up,
中文, dark, 360 px. Screenshots go to docs/ (the README shows one)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from routing.models import ModelEndpoint
from tests.grants import grant
from tests.studio.conftest import sign_in

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("quiet_server_env")]
DOCS = Path(__file__).resolve().parents[2] / "docs"
PASSWORD = "studio-pass-1"


@pytest.fixture
def studio_data(openai_server):
    get_user_model().objects.create_user("ada", password=PASSWORD)
    ModelEndpoint.objects.create(name="loopback", display_name="Loopback (slow)",
                                 engine="openai", upstream_model="slow-120",
                                 endpoint_url=openai_server.url)
    ModelEndpoint.objects.create(name="echo", engine="echo")


@pytest.fixture
def page(browser, live_server_url, studio_data):
    context = browser.new_context(viewport={"width": 1280, "height": 800},
                                  locale="en-US", color_scheme="light")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    sign_in(page, f"{live_server_url}/studio/", "ada", PASSWORD)
    page.errors = errors
    yield page
    context.close()


RECORD_TOKENS = """() => {
  window.tokenLog = [];
  new MutationObserver(records => records.forEach(r => window.tokenLog.push(
      [performance.now(), Number(r.target.dataset.tokens)])))
    .observe(document.getElementById("panes"), {subtree: true, attributes: true,
                                                attributeFilter: ["data-tokens"]});
}"""


def token_arrivals(page) -> list[tuple[float, int]]:
    """(ms, token count) each time the streaming answer's count changed in the page."""
    first: dict[int, float] = {}
    for ms, count in page.evaluate("() => window.tokenLog"):
        first.setdefault(count, ms)
    return sorted(((ms, count) for count, ms in first.items() if count), key=lambda x: x[1])


def test_chat_streams_stops_switches_language_and_shows_the_graph(page, live_server_url):
    # given: the graph panel open, the loopback model picked
    page.click("#toggle-panel")
    assert page.locator("#graph .node").count() == 7  # five nodes, start and end
    page.select_option("#model", "loopback")

    # when: a question, sent with Enter (Shift+Enter only adds a line)
    page.click("#prompt")
    page.keyboard.type("hello")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("studio from chromium today")
    assert page.input_value("#prompt") == "hello\nstudio from chromium today"
    page.evaluate(RECORD_TOKENS)
    page.keyboard.press("Enter")

    # then: tokens arrive one by one (~120 ms apart, as the model writes them), the
    # answer is rendered, the graph lit with timings
    answer = page.locator(".msg.assistant").last
    answer.locator(".actions").wait_for(timeout=15000)
    arrivals = token_arrivals(page)
    assert [count for _ms, count in arrivals] == [1, 2, 3, 4, 5, 6], arrivals
    gaps = [b[0] - a[0] for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert min(gaps) > 50, gaps
    assert answer.locator(".body").inner_text() == "echo: hello studio from chromium today"
    assert page.locator("#graph .node.done").count() == 5
    assert "ms" in page.locator('#graph .node[data-node="generate"] .time').text_content()
    assert "loopback" in page.locator("#route").inner_text()
    assert "tokens" in page.locator("#usage").inner_text()
    assert page.locator("#conversations li").count() == 1
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "studio.png"))

    # when: a long answer, stopped after a few tokens
    page.fill("#prompt", " ".join(f"word{n}" for n in range(60)))
    page.keyboard.press("Enter")
    page.wait_for_function("() => Number(document.querySelector('.msg.assistant.streaming')"
                           "?.dataset.tokens || 0) >= 3")
    assert page.is_visible("#stop") and not page.is_visible("#send")
    page.click("#stop")

    # then: the answer ends where it was, marked stopped; sending works again
    stopped = page.locator(".msg.assistant").last
    stopped.locator(".actions").wait_for(timeout=5000)
    assert "stopped" in stopped.locator(".meta").inner_text()
    assert len(stopped.locator(".body").inner_text().split()) < 40
    stopped_text = stopped.locator(".body").inner_text()
    assert page.is_visible("#send")

    # when: 中文
    page.click("#lang-zh")
    page.wait_for_selector("body[data-ready]")

    # then: the page is in Chinese (Django's i18n), the conversation is back from history
    assert page.get_attribute("html", "lang") == "zh-hans"
    assert page.get_attribute("#lang-zh", "aria-current") == "true"
    # the conversation list's relative time is written in Chinese (Intl, the page's lang)
    page.locator("#conversations time.ago").first.wait_for()
    assert re.search("前|现在", page.locator("#conversations time.ago").first.inner_text())
    page.locator(".msg.assistant").first.wait_for()
    assert page.locator(".msg.user").count() == 2
    assert page.locator(".msg.assistant .body").last.inner_text() == stopped_text  # kept
    page.click("#toggle-panel")
    page.wait_for_selector("#panel:not([hidden])")
    page.select_option("#model", "echo")
    page.fill("#prompt", "你好，OpenClaw！用中文回答。")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('.msg.assistant .actions')"
                           ".length === 3")
    assert page.locator(".msg.assistant .body").last.inner_text() == "你好，OpenClaw！用中文回答。"
    assert page.locator("#graph .node.done").count() == 5
    page.screenshot(path=str(DOCS / "studio-zh.png"))
    assert page.errors == []


def test_side_by_side_sends_one_prompt_to_two_models(page):
    # given
    page.click("#compare")
    page.select_option("#model", "echo")
    page.select_option("#model-b", "loopback")

    # when
    page.fill("#prompt", "compare these two")
    page.keyboard.press("Enter")

    # then
    for pane, answer in (("#pane-a", "compare these two"),  # the echo engine repeats
                         ("#pane-b", "echo: compare these two")):  # the loopback server
        page.locator(f"{pane} .msg.assistant .actions").wait_for(timeout=15000)
        assert page.locator(f"{pane} .msg.assistant .body").inner_text() == answer
    assert page.locator("#pane-b .pane-title").inner_text() == "loopback"
    page.screenshot(path=str(DOCS / "studio-side-by-side.png"))
    assert page.errors == []


def test_branch_and_regenerate_from_a_message(page):
    # given
    page.select_option("#model", "echo")
    page.fill("#prompt", "first question")
    page.keyboard.press("Enter")
    page.locator(".msg.assistant .actions").wait_for()

    # when: regenerate
    page.click(".msg.assistant .regenerate")

    # then: the old answer is kept, dimmed (its question is asked again), a new one follows
    page.wait_for_function("() => document.querySelectorAll('.msg.assistant .actions')"
                           ".length === 2")
    assert page.locator(".msg.superseded").count() == 1
    assert page.locator(".msg.assistant").first.get_attribute("class").count("superseded") == 1

    # when: branch from the new answer
    page.locator(".msg.assistant .branch").last.click()

    # then: a new conversation holding the turn, listed in the sidebar (the question
    # once, the replaced answer faded, the new one)
    page.wait_for_function("() => document.querySelectorAll('#conversations li').length === 2")
    page.wait_for_function("() => document.querySelectorAll('#pane-a .msg').length === 3")
    assert page.locator("#pane-a .msg.superseded").count() == 1
    assert "(branch)" in page.locator("#conversations li.active").inner_text()
    assert page.errors == []


def test_a_reply_is_rated_corrected_and_tagged_from_the_page(page):
    from jobs.models import Annotation

    # given: an answer
    page.select_option("#model", "echo")
    page.fill("#prompt", "what is the capital of France")
    page.keyboard.press("Enter")
    answer = page.locator(".msg.assistant").last
    answer.locator(".actions .rate").first.wait_for()

    # when: thumbs down, a correction and two tags (the browser's prompt dialogs)
    answer.locator('.rate[data-rating="down"]').click()
    page.wait_for_function("() => document.querySelector("
                           "'.msg.assistant:last-child .rate[data-rating=\"down\"]')"
                           ".getAttribute('aria-pressed') === 'true'")
    replies = iter(["Paris.", "geography, fixed"])
    page.on("dialog", lambda dialog: dialog.accept(next(replies)))
    answer.locator(".correct").click()
    page.wait_for_function("() => document.querySelector('.msg.assistant:last-child')"
                           ".classList.contains('corrected')")
    answer.locator(".tag").click()
    page.wait_for_function("() => document.querySelector('.msg.assistant:last-child "
                           ".actions').dataset.tags === 'geography, fixed'")

    # then: one annotation by ada holds all three
    saved = Annotation.objects.get(message_id=int(answer.get_attribute("data-message-id")))
    assert (saved.rating, saved.corrected_content, saved.tags) == (
        "down", "Paris.", ["geography", "fixed"])
    assert saved.annotator.get_username() == "ada"
    assert page.errors == []


def test_jobs_page_draws_the_training_loss(page, live_server_url):
    from jobs.models import Dataset, FineTuneJob

    # given: staff, and a fine-tuning job part way through
    get_user_model().objects.filter(username="ada").update(is_staff=True)
    grant(get_user_model().objects.get(username="ada"), "jobs.view_finetunejob")
    base = ModelEndpoint.objects.create(name="tiny-base", engine="transformers",
                                        model_path="/models/tiny", enabled=False)
    dataset = Dataset.objects.create(name="support", content=b"{}", sha256="0" * 64,
                                     line_count=1)
    losses = [[step, 6.0 - 0.02 * step + (0.1 if step % 3 == 0 else 0)]
              for step in range(1, 41)]
    FineTuneJob.objects.create(base_endpoint=base, dataset=dataset, status="running",
                               step=40, total_steps=60, losses=losses)

    # when
    page.goto(f"{live_server_url}/studio/jobs/")
    page.locator("#tune-rows .loss-chart polyline").wait_for()

    # then: the chart, the last loss and the progress
    row = page.locator("#tune-rows tr").first
    assert "5.200" in row.inner_text() and "40/60" in row.inner_text()
    assert len(page.locator("#tune-rows polyline").get_attribute("points").split()) == 40
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "studio-jobs.png"))
    assert page.errors == []


def test_dark_theme_and_360px_width_stay_usable(page):
    # given
    page.set_viewport_size({"width": 360, "height": 740})
    page.select_option("#model", "echo")

    # when
    page.click("#theme")
    page.fill("#prompt", "small screens **work** too")
    page.keyboard.press("Enter")
    page.locator(".msg.assistant .actions").wait_for()

    # then: nothing overflows sideways; the sidebar opens over the chat
    assert page.get_attribute("html", "data-theme") == "dark"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
    assert page.locator(".msg.assistant strong").inner_text() == "work"
    assert page.is_visible("#send") and page.is_visible("#prompt")
    page.screenshot(path=str(DOCS / "studio-mobile-dark.png"))
    page.click("#open-sidebar")
    page.wait_for_timeout(300)
    assert page.locator("#conversations li").count() == 1
    assert page.errors == []


def test_every_request_the_page_makes_goes_to_the_studio_itself(page, live_server_url):
    # given
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    # when
    page.reload()
    page.wait_for_selector("#conversations")
    page.wait_for_load_state("networkidle")

    # then: no CDN, no font service: the studio works offline
    own = (live_server_url, live_server_url.replace("http://", "ws://"), "data:")
    assert len(requested) >= 5 and all(url.startswith(own) for url in requested), requested
