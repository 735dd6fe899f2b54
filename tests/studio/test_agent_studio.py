"""The agent in the studio, in Chromium against the live web server and the loopback
OpenAI server (with ``tools`` it calls those its user message names, then answers
"echo: tool results: …"): the tools picker (per conversation, kept in the browser,
sent with each message), a card per tool call streamed into the answer and a line per
call in the timeline, a call that needs approval approved, edited and rejected from its
card, the picker in 中文; and ``/studio/api/tools/``, the tools a user may enable.
Screenshots go to the temporary folder, not docs/."""

from __future__ import annotations

import json
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from chat.models import McpServer, Tool, ToolKind
from chat.tools import mcp_client
from chat.tools.sync import sync_builtin_rows
from routing.models import ModelEndpoint
from tests.mcp_servers import TOKEN, DemoServer
from tests.studio.conftest import sign_in

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("quiet_server_env")]
REPO = Path(__file__).resolve().parents[2]
SHOTS = Path(tempfile.gettempdir())
PASSWORD = "agent-pass-1"
LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z_-]+")


@pytest.fixture
def agent_data(openai_server):
    """Ada and Bob; the loopback model; the shipped default workflow (its ``generate``
    node an agent offering the tools the user enabled); the built-in tools' rows and a
    tool only Bob may use."""
    users = get_user_model().objects
    users.create_user("ada", password=PASSWORD)
    bob = users.create_user("bob", password=PASSWORD)
    ModelEndpoint.objects.create(name="loopback", engine="openai", upstream_model="echo",
                                 endpoint_url=openai_server.url)
    call_command("loaddata", str(REPO / "fixtures" / "50_workflows.json"), verbosity=0)
    sync_builtin_rows()
    bobs = Tool.objects.create(name="bobs_sums", kind=ToolKind.BUILTIN, builtin="calculator",
                               description="Bob's own calculator.")
    bobs.users.add(bob)
    return openai_server


def _page(browser, live_server_url, scheme: str = "light", locale: str = "en-US"):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale=locale,
                                  color_scheme=scheme)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    sign_in(page, f"{live_server_url}/studio/", "ada", PASSWORD)
    page.errors = errors
    return page


@pytest.fixture
def page(browser, live_server_url, agent_data):
    page = _page(browser, live_server_url)
    yield page
    page.context.close()


def open_picker(page) -> None:
    page.click("#tools-button")
    page.locator("#tools-list input").first.wait_for()  # the list is fetched on load


def enable(page, *names: str) -> None:
    open_picker(page)
    for name in names:
        page.check(f'#tools-list input[value="{name}"]')
    page.click("#tools-button")  # closes the checklist


def ask(page, text: str) -> None:
    page.fill("#prompt", text)
    page.keyboard.press("Enter")


def test_enabled_tools_are_called_and_shown_as_cards_in_the_answer(page, agent_data):
    # given: the run panel open, the loopback model; the picker lists what Ada may use
    page.click("#toggle-panel")
    page.select_option("#model", "loopback")
    open_picker(page)
    listed = page.locator("#tools-list input").evaluate_all("boxes => boxes.map(b => b.value)")
    assert {"calculator", "current_time"} <= set(listed) and "bobs_sums" not in listed
    page.click("#tools-button")
    assert page.inner_text("#tools-count") == "0"

    # when: two tools enabled, then a message naming them
    open_picker(page)
    page.check('#tools-list input[value="calculator"]')
    page.check('#tools-list input[value="current_time"]')
    assert page.inner_text("#tools-count") == "2"
    page.screenshot(path=str(SHOTS / "openclaw-agent-picker-light.png"))
    page.keyboard.press("Escape")
    assert page.is_hidden("#tools-menu")
    ask(page, "use calculator and current_time in UTC")

    # then: the model was offered exactly those two (the frame's ``tools``) ...
    answer = page.locator(".msg.assistant").last
    answer.locator(".actions").wait_for(timeout=15000)
    offered = [[tool["function"]["name"] for tool in request.body["tools"]]
               for request in agent_data.requests if isinstance(request.body, dict)
               and request.body.get("tools")]
    assert offered[0] == ["calculator", "current_time"]
    # ... each call is a card before the answer's text, in the order they came
    order = answer.locator(".body > *").evaluate_all(
        "nodes => nodes.map(n => n.dataset.name || n.className)")
    assert order == ["calculator", "current_time", "part"]
    calculator, clock = answer.locator(".tool-card").all()
    assert json.loads(calculator.locator(".tool-args").inner_text()) == {"expression": "UTC"}
    assert "error" in calculator.get_attribute("class")  # "UTC" is no arithmetic
    assert "UTC" in calculator.locator(".tool-out.error .tool-result").inner_text()
    assert "ok" in clock.get_attribute("class")
    assert json.loads(clock.locator(".tool-result").inner_text())["timezone"] == "UTC"
    assert all(re.fullmatch(r"[\d.,]+ ms", card.locator(".tool-ms").inner_text())
               for card in (calculator, clock))
    assert answer.locator(".part").inner_text().startswith("echo: tool results:")
    assert page.locator("#timeline li.tool").evaluate_all(
        "items => items.map(i => i.dataset.tool)") == ["calculator", "current_time"]
    page.screenshot(path=str(SHOTS / "openclaw-agent-cards-light.png"))

    # when: the conversation is opened again, and a new one
    conversation = page.evaluate("() => location.hash.slice(1)")
    kept = page.evaluate("id => localStorage.getItem('openclaw-tools:' + id)", conversation)
    assert json.loads(kept) == ["calculator", "current_time"]
    page.reload()
    page.wait_for_selector("body[data-ready]")
    page.locator(".msg.assistant .actions").wait_for()

    # then: its tools are still enabled (the stored answer is its text: no cards)
    assert page.inner_text("#tools-count") == "2"
    assert page.locator(".msg.assistant .body").inner_text().startswith("echo: tool results:")
    page.click("#new-chat")
    assert page.inner_text("#tools-count") == "0"
    assert page.errors == []


def _wait_for_review(page):
    """The card that waits for a decision (found by its call's id: it stays the same
    card when it stops waiting)."""
    waiting = page.locator(".tool-card.waiting").last
    waiting.locator(".tool-review button.approve").wait_for(timeout=15000)
    return page.locator(f'.tool-card[data-call="{waiting.get_attribute("data-call")}"]')


def _answer_after(page, card):
    card.locator("xpath=ancestor::div[contains(@class, 'msg')]").locator(".actions .meta") \
        .wait_for(timeout=15000)
    return card.locator("xpath=ancestor::div[contains(@class, 'msg')]").locator(".part").last


def test_a_call_that_needs_approval_is_approved_edited_or_rejected_from_its_card(
        browser, live_server_url, agent_data):
    # given: the calculator needs a person's approval; dark theme
    Tool.objects.filter(name="calculator").update(requires_approval=True)
    page = _page(browser, live_server_url, scheme="dark")
    page.select_option("#model", "loopback")
    enable(page, "calculator")
    assert page.locator("#tools-list .badge.approval").count() == 1

    # when: a call is asked for
    ask(page, "use calculator for 6*7")

    # then: its card waits, with Approve / Edit / Reject
    card = _wait_for_review(page)
    assert json.loads(card.locator(".tool-args").inner_text()) == {"expression": "6*7"}
    assert card.locator(".tool-review button").evaluate_all(
        "bs => bs.filter(b => !b.hidden).map(b => b.className)") == ["approve", "edit", "reject"]
    page.screenshot(path=str(SHOTS / "openclaw-agent-approval-dark.png"))

    # when: approved
    card.locator("button.approve").click()

    # then: the buttons are spent, the call runs, the answer follows in the same message
    assert card.locator(".tool-review button:disabled").count() == 4
    assert _answer_after(page, card).inner_text() == "echo: tool results: 42"
    assert "ok" in card.get_attribute("class")
    assert card.locator(".tool-result").inner_text() == "42"
    page.screenshot(path=str(SHOTS / "openclaw-agent-approved-dark.png"))

    # when: the next call's arguments are edited before it runs
    ask(page, "use calculator for 2+2")
    card = _wait_for_review(page)
    card.locator("button.edit").click()
    card.locator("textarea.tool-edit").fill('{"expression": "2**10"}')
    page.screenshot(path=str(SHOTS / "openclaw-agent-edit-dark.png"))
    card.locator("button.approve-edit").click()

    # then: it ran with the edited arguments
    assert _answer_after(page, card).inner_text() == "echo: tool results: 1024"
    assert json.loads(card.locator(".tool-args").inner_text()) == {"expression": "2**10"}

    # when: the next is rejected, with a reason
    ask(page, "use calculator for 1/0")
    card = _wait_for_review(page)
    page.once("dialog", lambda dialog: dialog.accept("not today"))
    card.locator("button.reject").click()

    # then: the card says so and the model is told
    said = _answer_after(page, card).inner_text()
    assert said.startswith("echo: tool results:") and "not today" in said
    assert "rejected" in card.get_attribute("class")
    assert card.locator(".tool-out .tool-result").inner_text() == "not today"
    page.screenshot(path=str(SHOTS / "openclaw-agent-rejected-dark.png"))
    assert page.errors == []
    page.context.close()


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory):
    """The official SDK's demo MCP server, a process of its own (Streamable HTTP)."""
    server = DemoServer("streamable-http", tmp_path_factory.mktemp("mcp") / "studio.log")
    yield server.start()
    server.stop()


def test_two_mcp_tools_and_a_built_in_at_once_with_an_approval_then_the_answer(
        browser, live_server_url, agent_data, mcp_server):
    # given: the demo MCP server registered (its tools discovered), its weather tool
    # needing a person's approval
    server = McpServer.objects.create(name="demo", url=mcp_server.url,
                                      headers={"Authorization": f"Bearer {TOKEN}"})
    with ThreadPoolExecutor(1) as thread:  # Playwright's loop runs in this one
        thread.submit(mcp_client.refresh, server.pk).result()
    Tool.objects.filter(name="demo__weather").update(requires_approval=True)
    page = _page(browser, live_server_url)
    page.click("#toggle-panel")
    page.select_option("#model", "loopback")
    enable(page, "demo__add", "demo__weather", "current_time")

    # when: one message asks for the three
    ask(page, "use demo__add and demo__weather and current_time in UTC")

    # then: the calls wait together, the weather card with the buttons
    card = _wait_for_review(page)
    assert card.get_attribute("data-name") == "demo__weather"
    answer = card.locator("xpath=ancestor::div[contains(@class, 'msg')]")
    assert answer.locator(".tool-card").evaluate_all(
        "cards => cards.map(c => c.dataset.name)") == ["demo__add", "demo__weather",
                                                       "current_time"]

    # when: approved
    card.locator("button.approve").click()

    # then: all three ran at once, each card with its result, and the answer follows
    said = _answer_after(page, card).inner_text()
    assert said.startswith("echo: tool results:") and "sunny" in said
    cards = {c.get_attribute("data-name"): c for c in answer.locator(".tool-card").all()}
    assert all("ok" in c.get_attribute("class") for c in cards.values()), \
        [c.get_attribute("class") for c in cards.values()]
    assert "sunny" in cards["demo__weather"].locator(".tool-result").inner_text()
    assert page.locator("#timeline li.tool").count() == 3
    page.screenshot(path=str(SHOTS / "openclaw-agent-mcp-light.png"))
    assert page.errors == []
    page.context.close()


OWN_WORDS = """node => {
    const copy = node.cloneNode(true);  // without the tools' names, descriptions, JSON
    copy.querySelectorAll("code, pre, .description").forEach(n => n.remove());
    return copy.innerText; }"""


def test_the_tools_picker_and_cards_in_chinese_have_no_english_left(
        browser, live_server_url, agent_data):
    # given
    Tool.objects.filter(name="calculator").update(requires_approval=True)
    page = _page(browser, live_server_url, locale="zh-CN")

    # when
    page.click("#lang-zh")
    page.wait_for_selector("body[data-ready]")
    open_picker(page)

    # then: the picker's own words are Chinese (the tools' names are identifiers), and
    # each tool's description is its Chinese one
    words = page.locator("#tools-picker").evaluate(OWN_WORDS)
    assert LATIN_WORD.findall(words) == [], words
    descriptions = page.locator("#tools-list .description").all_inner_texts()
    assert descriptions and all(re.search(r"[\u4e00-\u9fff]", d) for d in descriptions), \
        descriptions
    page.screenshot(path=str(SHOTS / "openclaw-agent-picker-zh.png"))

    # when: a call that waits for approval
    page.check('#tools-list input[value="calculator"]')
    page.keyboard.press("Escape")
    page.select_option("#model", "loopback")
    ask(page, "use calculator for 6*7")
    card = _wait_for_review(page)
    card.locator("button.edit").click()

    # then: its card speaks Chinese too
    words = card.evaluate(OWN_WORDS)
    assert LATIN_WORD.findall(words) == [], words
    page.screenshot(path=str(SHOTS / "openclaw-agent-card-zh.png"))
    assert page.errors == []
    page.context.close()


def test_the_tools_endpoint_lists_what_the_user_may_use_in_their_language(client):
    # given: a tool for everyone (both languages), one for Bob only, one disabled
    ada = get_user_model().objects.create_user("ada", password=PASSWORD)
    bob = get_user_model().objects.create_user("bob", password=PASSWORD)
    Tool.objects.create(name="lookup", kind=ToolKind.BUILTIN, builtin="lookup",
                        description_en="Looks things up.", description_zh_hans="查找资料。",
                        requires_approval=True)
    Tool.objects.create(name="off", kind=ToolKind.BUILTIN, builtin="off", enabled=False)
    Tool.objects.create(name="bobs", kind=ToolKind.BUILTIN, builtin="bobs").users.add(bob)

    # when / then: sign-in required
    assert client.get("/studio/api/tools/").status_code == 302

    # when
    client.force_login(ada)
    tools = {t["name"]: t for t in client.get("/studio/api/tools/").json()["tools"]}
    chinese = client.get("/studio/api/tools/", HTTP_ACCEPT_LANGUAGE="zh-hans").json()

    # then
    assert tools.keys() >= {"lookup"} and not tools.keys() & {"off", "bobs"}
    assert tools["lookup"] == {"name": "lookup", "description": "Looks things up.",
                               "kind": "builtin", "kind_label": "built-in",
                               "requires_approval": True}
    assert {t["name"]: t["description"] for t in chinese["tools"]}["lookup"] == "查找资料。"
