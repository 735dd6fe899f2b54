"""The workflow editor's list page and versions panel in a real browser (Debian's
Chromium through Playwright) against the live web server: the list of workflows, a new
one made from it, a duplicate, and in the editor's Versions tab the versions of a
workflow, the difference between two of them and a roll back — in English and 中文.
The panel's screenshot goes to docs/editor-versions.png."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from chat.models import Workflow, WorkflowVersion
from chat.workflows.versions import save_version
from tests.grants import grant
from tests.studio.conftest import page_in

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("quiet_server_env")]
DOCS = Path(__file__).resolve().parents[2] / "docs"
PASSWORD = "editor-pass-1"
LANGUAGES = ["en", "zh-hans"]
# Dates as Intl writes them in each language ("Mar 1, 2025, 2:05 PM" / "2025年3月1日 14:05")
DATE = {"en": re.compile(r"[A-Z][a-z]{2} \d{1,2}, \d{4}"), "zh-hans": re.compile(r"\d{4}年")}


def node(node_id: str, kind: str, **config) -> dict:
    return {"id": node_id, "type": kind, "config": config}


def edge(source: str, target: str) -> dict:
    return {"source": source, "target": target}


WEATHER = {"field": "content", "op": "icontains", "value": "weather"}
V1 = {"entry": "start", "nodes": [node("start", "llm", prompt="You are v1."),
                                  node("polish", "llm", prompt="Polish the answer."),
                                  node("done", "end")],
      "edges": [edge("start", "polish"), edge("polish", "done")]}
V2 = {**V1, "nodes": [node("start", "llm", prompt="You are v2."), *V1["nodes"][1:]]}
V3 = {"entry": "check",
      "nodes": [node("check", "condition", when=WEATHER, then="start", **{"else": "chat"}),
                node("start", "llm", prompt="You are v3."), node("chat", "llm"),
                node("done", "end")],
      "edges": [edge("start", "done"), edge("chat", "done")]}


def made(slug: str, name: str, definition: dict) -> Workflow:
    """A workflow saved as the admin saves it (validated first), with no versions yet."""
    workflow = Workflow(slug=slug, name=name, definition=definition)
    workflow.full_clean()
    workflow.save()
    return workflow


@pytest.fixture
def editor_user():
    """Staff who may read, change and add workflows (the editor's API wants staff)."""
    user = get_user_model().objects.create_user("grace", password=PASSWORD, is_staff=True)
    return grant(user, "chat.view_workflow", "chat.change_workflow", "chat.add_workflow")


@pytest.fixture
def open_as(browser, live_server_url, editor_user):
    """``open_as(language, path)``: a signed-in page at ``path`` with the studio in
    ``language`` (Django's language cookie); console errors are gathered."""
    contexts = []

    def open_page(language: str, path: str):
        page = page_in(browser, live_server_url, language, contexts, width=1360, height=1000)
        page.on("console", lambda msg: page.errors.append(msg.text)
                if msg.type == "error" and "status of 400" not in msg.text else None)
        page.goto(f"{live_server_url}/studio/login/?next={path}")
        page.fill("#id_username", "grace")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server_url}{path}")
        assert page.get_attribute("html", "lang") == language
        return page

    yield open_page
    for context in contexts:
        context.close()


def open_versions(page) -> None:
    """The editor's Versions tab, its list loaded."""
    page.locator("#tab-versions").click()
    page.locator(".versions-panel .version-row").first.wait_for()


def api_post(page, live_server_url: str, path: str, body: dict) -> dict:
    """POST ``body`` to the editor's API as the page's signed-in user."""
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post(f"{live_server_url}{path}", data=body, headers={
        "X-CSRFToken": token, "Referer": f"{live_server_url}/studio/"})
    assert response.status in (200, 201), response.text()
    return response.json()


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_list_shows_workflows_and_makes_new_ones_and_duplicates(open_as, live_server_url,
                                                                    language):
    # given: two workflows
    made("support", "Support desk", V1)
    made("triage", "Triage", V3)

    # when: the list page
    page = open_as(language, "/studio/workflows/")

    # then: a row each, linking to the editor, with its node count and a date in the
    # page's language
    rows = page.locator(".wl-table tbody tr")
    rows.first.wait_for()
    assert rows.count() == 2
    support = page.locator('tr[data-slug="support"]')
    assert support.locator("a").get_attribute("href") == "/studio/workflows/support/"
    assert support.locator("td").nth(4).inner_text() == "3"
    assert page.locator('tr[data-slug="triage"] td').nth(4).inner_text() == "4"
    assert DATE[language].search(support.locator("time").inner_text())

    # when: a new workflow whose slug is taken
    page.click(".wl-new")
    page.fill("#new-name", "Billing desk")
    assert page.input_value("#new-slug") == "billing-desk"  # proposed from the name
    page.fill("#new-slug", "support")
    page.click(".wl-create button[type=submit]")

    # then: the refusal is shown beside the slug; nothing is made
    page.locator("#new-slug-error").wait_for()
    assert page.locator("#new-slug-error").inner_text().strip()
    assert page.get_attribute("#new-slug", "aria-invalid") == "true"
    assert Workflow.objects.count() == 2

    # when: another slug
    page.fill("#new-slug", "billing")
    page.click(".wl-create button[type=submit]")

    # then: it is made and opened in the editor
    page.wait_for_url(f"{live_server_url}/studio/workflows/billing/")
    billing = Workflow.objects.get(slug="billing")
    assert billing.name == "Billing desk"
    assert [n["id"] for n in billing.definition["nodes"]] == ["start"]

    # when: back on the list, "support" duplicated
    page.goto(f"{live_server_url}/studio/workflows/")
    page.locator('tr[data-slug="support"] .wl-duplicate').click()
    page.fill("#dup-support-slug", "support-eu")
    page.fill("#dup-support-name", "Support desk (EU)")
    page.click(".wl-duplicate-row button[type=submit]")

    # then: a new workflow with the same definition, open in the editor
    page.wait_for_url(f"{live_server_url}/studio/workflows/support-eu/")
    copy = Workflow.objects.get(slug="support-eu")
    assert copy.name == "Support desk (EU)" and copy.definition == V1
    page.goto(f"{live_server_url}/studio/workflows/")
    page.locator('tr[data-slug="support-eu"]').wait_for()
    assert page.locator(".wl-table tbody tr").count() == 4
    assert page.errors == []


def test_a_user_who_may_only_look_can_neither_create_nor_publish(open_as, live_server_url,
                                                                editor_user):
    # given: a user who may only look; "support" at v1, v2 (live) and v3 (a draft)
    support = made("support", "Support desk", V1)
    save_version(support, V2, author=editor_user, publish=True)
    save_version(support, V3, author=editor_user)
    editor_user.user_permissions.clear()
    grant(editor_user, "chat.view_workflow")

    # when: the list
    page = open_as("en", "/studio/workflows/")

    # then: no create, no duplicate
    page.locator('tr[data-slug="support"]').wait_for()
    assert page.locator(".wl-new").count() == 0
    assert page.locator(".wl-duplicate").count() == 0

    # when: its versions
    page.goto(f"{live_server_url}/studio/workflows/support/")
    open_versions(page)

    # then: they can be opened and compared, not published or rolled back
    assert page.locator(".version-publish").is_disabled()
    assert page.locator(".version-rollback").is_disabled()
    assert page.locator(".version-open").first.is_enabled()
    page.click(".version-compare")
    page.locator(".version-diff .diff-nodes-changed").wait_for()
    assert Workflow.objects.get(pk=support.pk).live_version == 2


@pytest.mark.parametrize("language", LANGUAGES)
def test_versions_are_compared_and_rolled_back(open_as, live_server_url, language):
    # given: "triage" at v1 (published), v2 (published) and v3 (a draft), made through
    # the editor's API
    workflow = made("triage", "Triage", V1)
    page = open_as(language, "/studio/workflows/")
    api = "/studio/api/workflows/triage/versions/"
    assert api_post(page, live_server_url, api,
                    {"definition": V2, "layout": {}, "publish": True,
                     "note": "Friendlier prompt"})["version"]["number"] == 2
    assert api_post(page, live_server_url, api,
                    {"definition": V3, "layout": {}, "publish": False,
                     "note": "Weather branch"})["version"]["number"] == 3
    workflow.refresh_from_db()
    assert workflow.live_version == 2 and workflow.definition == V2

    # when: the editor's Versions tab
    page.goto(f"{live_server_url}/studio/workflows/triage/")
    open_versions(page)

    # then: newest first, v3 a draft, v2 live, times in the page's language
    rows = page.locator(".version-row")
    assert [rows.nth(i).get_attribute("data-number") for i in range(rows.count())] == \
        ["3", "2", "1"]
    v1, v2, v3 = (page.locator(f'.version-row[data-number="{n}"]') for n in (1, 2, 3))
    assert v3.locator(".wf-badge-draft").count() == 1 and v3.locator(".version-publish").count()
    assert v2.locator(".wf-badge-live").count() == 1 and "is-live" in v2.get_attribute("class")
    assert "Weather branch" in v3.inner_text() and "grace" in v3.inner_text()
    assert DATE[language].search(v3.locator(".version-meta").inner_text())

    # when: v1 compared with v3
    v1.locator('input[name="diff-a"]').check()
    v3.locator('input[name="diff-b"]').check()
    page.click(".version-compare")

    # then: the differences, readably
    changes = page.locator(".version-diff")
    changes.wait_for()
    assert changes.locator(".diff-entry del").inner_text() == "start"
    assert changes.locator(".diff-entry ins").inner_text() == "check"
    assert changes.locator(".diff-nodes-added code").all_inner_texts() == ["check", "chat"]
    assert changes.locator(".diff-nodes-removed code").all_inner_texts() == ["polish"]
    changed = changes.locator(".diff-nodes-changed .diff-field")
    assert changed.locator("dt").inner_text() == "prompt"
    assert changed.locator("del").inner_text() == "You are v1."
    assert changed.locator("ins").inner_text() == "You are v3."
    edges_added = changes.locator(".diff-edges-added li").all_inner_texts()
    assert [re.sub(r"\s+", " ", text) for text in edges_added] == \
        ["start → done", "chat → done"]
    assert changes.locator(".diff-edges-removed li").count() == 2
    if language == "en":
        DOCS.mkdir(exist_ok=True)
        page.locator(".versions-panel").scroll_into_view_if_needed()
        page.screenshot(path=str(DOCS / "editor-versions.png"))

    # when: a roll back to v1, confirmed
    v1.locator(".version-rollback").click()
    assert Workflow.objects.get(pk=workflow.pk).live_version == 2  # not before confirming
    v1.locator(".version-confirm-rollback").click()

    # then: a new version v4, live, equal to v1; the list shows it on top
    v4 = page.locator('.version-row[data-number="4"]')
    v4.wait_for()
    assert v4.locator(".wf-badge-live").count() == 1
    assert v2.locator(".wf-badge-live").count() == 0
    workflow.refresh_from_db()
    assert workflow.live_version == 4 and workflow.definition == V1
    latest = WorkflowVersion.objects.get(workflow=workflow, number=4)
    assert latest.definition == V1 and latest.published_at is not None
    assert latest.author.username == "grace"

    # when: v3 (the draft) opened on the canvas
    v3.locator(".version-open").click()

    # then: its four nodes are drawn
    page.wait_for_function("() => document.querySelectorAll('.react-flow__node').length === 4")
    assert page.locator('.react-flow__node[data-id="check"]').count() == 1
    assert page.errors == []
