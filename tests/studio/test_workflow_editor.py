"""The visual workflow editor's canvas in a real browser (Debian's Chromium through
Playwright) against the live web server: a workflow built by dragging node types from
the palette, connecting handles with the mouse and filling the node forms; a config
made invalid shows its problem on its node until it is fixed; save & publish makes the
drawn definition the live one. In English and 中文 (docs/editor.png, docs/editor-zh.png).
Also the page itself: sign-in, permission, unknown workflow, its config."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from chat.models import Workflow
from chat.tools.sync import sync_builtin_rows
from tests.grants import grant
from tests.studio.conftest import page_in, sign_in

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("quiet_server_env")]
DOCS = Path(__file__).resolve().parents[2] / "docs"
PASSWORD = "canvas-pass-1"
SHOTS = {"en": DOCS / "editor.png", "zh-hans": DOCS / "editor-zh.png"}
STARTER = {"entry": "start", "nodes": [{"id": "start", "type": "llm", "config": {}}],
           "edges": []}
EXPECTED = {
    "entry": "memory_recall",
    "nodes": [
        {"id": "memory_recall", "type": "memory_recall", "config": {"long_term": False}},
        {"id": "agent", "type": "agent",
         "config": {"prompt": "Answer briefly.", "tools": ["current_time"], "max_steps": 5}},
        {"id": "human_approval", "type": "human_approval",
         "config": {"prompt": "Send this answer?"}},
        {"id": "end", "type": "end", "config": {}},
    ],
    "edges": [{"source": "memory_recall", "target": "agent"},
              {"source": "agent", "target": "human_approval"},
              {"source": "human_approval", "target": "end"}],
}


def canonical(definition: dict) -> dict:
    """A definition with its node and edge lists in a fixed order."""
    return {"entry": definition.get("entry"),
            "nodes": sorted(definition["nodes"], key=lambda node: node["id"]),
            "edges": sorted(definition["edges"], key=lambda e: (e["source"], e["target"]))}


# --- the page ------------------------------------------------------------------------


def test_signed_out_the_page_sends_to_the_studio_sign_in_and_back(client):
    response = client.get("/studio/workflows/triage/")
    assert response.status_code == 302
    assert response["Location"] == "/studio/login/?next=/studio/workflows/triage/"


def test_without_the_view_permission_the_page_is_refused_with_403(client):
    # given: a signed-in user (even staff) without chat.view_workflow
    get_user_model().objects.create_user("nina", password=PASSWORD, is_staff=True)
    client.login(username="nina", password=PASSWORD)
    # when / then
    response = client.get("/studio/workflows/")
    assert response.status_code == 403
    assert b"editor-config" not in response.content


def test_an_unknown_workflow_is_404_and_a_known_one_gets_the_config(client):
    # given: staff who may view (not change) workflows, and one workflow
    user = get_user_model().objects.create_user("vera", password=PASSWORD, is_staff=True)
    grant(user, "chat.view_workflow")
    Workflow.objects.create(slug="triage", name="Triage", definition=STARTER)
    client.login(username="vera", password=PASSWORD)
    # when
    missing = client.get("/studio/workflows/nope/")
    found = client.get("/studio/workflows/triage/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    # then
    assert missing.status_code == 404
    assert found.status_code == 200
    html = found.content.decode()
    assert '<html lang="zh-hans"' in html
    assert html.index("/jsi18n/") < html.index("studio/dist/editor.js")
    config = json.loads(re.search(r'id="editor-config" type="application/json">(.*?)</script>',
                                  html).group(1))
    assert config["slug"] == "triage" and config["language"] == "zh-hans"
    assert config["can_change"] is False and config["can_add"] is False
    assert config["urls"]["workflow-versions"] == "/studio/api/workflows/{slug}/versions/"
    assert config["urls"]["workflow-publish"] == \
        "/studio/api/workflows/{slug}/versions/{number}/publish/"
    assert config["urls"]["steps"] == "/studio/api/conversations/{id}/steps/"
    assert config["urls"]["studio"] == "/studio/"


def test_the_studio_links_to_the_workflows_only_for_those_who_may_see_them(client):
    # given: staff who may view workflows, and a user who may not
    viewer = get_user_model().objects.create_user("wes", password=PASSWORD, is_staff=True)
    grant(viewer, "chat.view_workflow")
    get_user_model().objects.create_user("una", password=PASSWORD)
    # when / then
    client.login(username="wes", password=PASSWORD)
    assert '<a href="/studio/workflows/" id="workflows-link">' in \
        client.get("/studio/").content.decode()
    client.login(username="una", password=PASSWORD)
    assert 'id="workflows-link"' not in client.get("/studio/").content.decode()


# --- the canvas in the browser -------------------------------------------------------


@pytest.fixture
def editor(browser, live_server_url):
    """``editor(language)``: a staff superuser's page on a new workflow's editor (its one
    starter node), in ``language``; page errors are gathered in ``page.errors``."""
    get_user_model().objects.create_superuser("ada", "ada@example.com", PASSWORD)
    sync_builtin_rows()
    Workflow.objects.create(slug="assistant", name="Assistant", definition=STARTER)
    contexts = []

    def open_editor(language: str):
        page = page_in(browser, live_server_url, language, contexts)
        sign_in(page, f"{live_server_url}/studio/workflows/assistant/", "ada", PASSWORD)
        page.wait_for_selector(".wf-editor[data-ready] .react-flow__node[data-id=start]")
        return page

    yield open_editor
    for context in contexts:
        context.close()


def node(page, node_id: str):
    return page.locator(f".react-flow__node[data-id='{node_id}']")


def drop(page, node_type: str, x: float, y: float) -> None:
    """Drag ``node_type`` from the palette onto the canvas at (x, y) of the pane."""
    page.locator(f".palette-item[data-type='{node_type}']").drag_to(
        page.locator(".react-flow__pane"), target_position={"x": x, "y": y})
    node(page, node_type).wait_for()


def wire(page, source: str, target: str) -> None:
    """Press on ``source``'s output handle and release on ``target``'s input."""
    start = node(page, source).locator(".react-flow__handle.source").bounding_box()
    end = node(page, target).locator(".react-flow__handle.target").bounding_box()
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + end["height"] / 2, steps=12)
    page.mouse.up()


def field(page, key: str):
    return page.locator(f"#panel-node .field[data-key='{key}']")


def settled(page) -> None:
    """Wait until the server has checked the latest definition."""
    page.wait_for_timeout(450)  # the editor's debounce (400 ms) before it asks
    page.wait_for_load_state("networkidle")


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_a_workflow_drawn_on_the_canvas_is_published_as_drawn(editor, language):
    page = editor(language)
    assert page.locator("html").get_attribute("lang") == language

    # given: four node types dragged from the palette, their forms filled
    drop(page, "memory_recall", 160, 90)
    field(page, "long_term").locator("input[type=checkbox]").uncheck()
    drop(page, "agent", 160, 260)
    field(page, "prompt").locator("textarea").fill("Answer briefly.")
    field(page, "tools").locator("input[value=current_time]").check()
    drop(page, "human_approval", 160, 450)
    field(page, "prompt").locator("textarea").fill("Send this answer?")
    drop(page, "end", 160, 610)

    # when: their handles are connected with the mouse
    wire(page, "memory_recall", "agent")
    wire(page, "agent", "human_approval")
    wire(page, "human_approval", "end")
    edges = page.locator(".react-flow__edge")
    assert edges.count() == 3
    # (undo and redo the last connection, with the keys)
    page.keyboard.press("Control+z")
    assert edges.count() == 2
    page.keyboard.press("Control+Shift+z")
    assert edges.count() == 3

    # ... the run starts at memory_recall; the starter node, now unreachable, is deleted
    node(page, "memory_recall").click()
    page.locator("#panel-node .make-entry").click()
    assert node(page, "memory_recall").locator(".wf-entry").count() == 1
    settled(page)
    assert node(page, "start").locator(".wf-problems li").count() >= 1  # unreachable
    node(page, "start").click()
    page.keyboard.press("Delete")
    node(page, "start").wait_for(state="detached")

    # then: an out-of-range number is a problem shown on its node, until it is fixed
    node(page, "agent").click()
    field(page, "max_steps").locator("input").fill("99")
    problem = node(page, "agent").locator(".wf-problems li")
    problem.first.wait_for()
    assert "max_steps" in problem.first.inner_text()
    assert page.locator(".wf-node.invalid").count() == 1
    assert "max_steps" in page.locator("#panel-node .form-problems").inner_text()
    page.locator("#save-draft").click()  # refused (400): nothing saved
    page.locator("#notice.error").wait_for()
    assert Workflow.objects.get(slug="assistant").versions.count() == 1
    assert "max_steps" in problem.first.inner_text()
    field(page, "max_steps").locator("input").fill("5")
    page.locator("#check-state.good").wait_for()
    assert page.locator(".wf-node.invalid").count() == 0

    # when: saved and published, with a note
    page.locator("#auto-layout").click()
    page.locator("#version-note").fill("memory, agent, approval")
    page.locator("#save-publish").click()
    page.locator("#notice.ok").wait_for()
    badge = page.locator("#version-badge")
    assert "version-live" in badge.get_attribute("class") and "2" in badge.inner_text()
    assert page.locator(".wf-toolbar .dirty").count() == 0

    # then: the live definition is the one drawn
    workflow = Workflow.objects.get(slug="assistant")
    assert canonical(workflow.definition) == canonical(EXPECTED)
    published = workflow.versions.get(number=workflow.live_version)
    assert published.note == "memory, agent, approval"
    assert set(published.layout) == {"memory_recall", "agent", "human_approval", "end"}
    node(page, "agent").click()
    page.wait_for_timeout(250)  # the selection's border
    page.evaluate("document.getElementById('panel-node').scrollTop = 0")
    page.screenshot(path=str(SHOTS[language]))
    assert page.errors == []


ROUTED = {"entry": "check",
          "nodes": [{"id": "check", "type": "condition",
                     "config": {"when": {}, "then": "yes", "else": "no"}},
                    {"id": "yes", "type": "llm", "config": {}},
                    {"id": "no", "type": "llm", "config": {}},
                    {"id": "done", "type": "end", "config": {}}],
          "edges": [{"source": "yes", "target": "done"}, {"source": "no", "target": "done"}]}


def test_a_router_draws_its_branches_and_a_renamed_node_is_followed(editor):
    # given: a workflow whose router names its next nodes, opened with no layout
    Workflow.objects.create(slug="routed", name="Routed", definition=ROUTED)
    page = editor("en")
    page.goto(page.url.replace("/assistant/", "/routed/"))
    page.wait_for_selector(".wf-editor[data-ready] .react-flow__node[data-id=check]")

    # then: laid out top to bottom; the branches dashed and labelled, not deletable
    top = node(page, "check").bounding_box()
    assert all(node(page, n).bounding_box()["y"] > top["y"] + top["height"]
               for n in ("yes", "no"))
    branches = page.locator(".react-flow__edge.wf-branch")
    assert branches.count() == 2
    assert sorted(branches.locator(".react-flow__edge-text").all_text_contents()) == \
        ["Else", "Then"]
    assert node(page, "check").locator(".react-flow__handle.source.connectable").count() == 0
    assert node(page, "done").locator(".react-flow__handle.source").count() == 0

    # when: "yes" is renamed in its form
    node(page, "yes").click()
    page.focus("#wf-node-id")
    page.keyboard.press("Backspace")  # edits the field, does not delete the node
    assert node(page, "yes").count() == 1
    page.fill("#wf-node-id", "answer")
    page.keyboard.press("Enter")
    # then: the router's branch and the edge follow it
    node(page, "answer").wait_for()
    assert branches.count() == 2
    assert page.locator(".react-flow__edge[data-id^='edge:']").count() == 2

    # when: a second edge is drawn from "no": it replaces the first, and says so
    wire(page, "no", "answer")
    assert "instead of" in page.locator("#notice").inner_text()

    # an edge selected and deleted with the key; undone
    page.locator(".react-flow__edge[data-id='edge:0'] .react-flow__edge-interaction").click()
    page.keyboard.press("Delete")
    page.locator(".react-flow__edge[data-id='edge:1']").wait_for(state="detached")
    assert page.locator(".react-flow__edge[data-id^='edge:']").count() == 1
    page.keyboard.press("Control+z")
    assert page.locator(".react-flow__edge[data-id^='edge:']").count() == 2

    # a condition's JSON field shows a parse error and changes nothing until it parses
    node(page, "check").click()
    when = field(page, "when").locator("textarea")
    when.fill("{oops")
    assert "Not valid JSON" in field(page, "when").locator(".form-error").inner_text()
    when.fill('{"field": "content", "op": "icontains", "value": "hi"}')
    assert field(page, "when").locator(".form-error").count() == 0

    # a click on a palette item adds it in the middle; undo takes it away
    page.locator(".palette-item[data-type=end]").click()
    node(page, "end").wait_for()
    page.locator("#undo").click()
    node(page, "end").wait_for(state="detached")

    # when: saved as a draft
    page.locator("#save-draft").click()
    page.locator("#notice.ok").wait_for()
    # then: the draft holds the rename and the edges; the live definition is unchanged
    workflow = Workflow.objects.get(slug="routed")
    draft = workflow.versions.order_by("-number").first()
    assert draft.published_at is None and workflow.definition == ROUTED
    assert draft.definition["nodes"][0]["config"] == {
        "when": {"field": "content", "op": "icontains", "value": "hi"},
        "then": "answer", "else": "no"}
    assert sorted((e["source"], e["target"]) for e in draft.definition["edges"]) == \
        [("answer", "done"), ("no", "answer")]
    assert "version-draft" in page.locator("#version-badge").get_attribute("class")
    assert page.errors == []
