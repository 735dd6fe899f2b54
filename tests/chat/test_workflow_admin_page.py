"""The workflow's admin page as a new user meets it, through Django's test client as a
superuser on the real database: the graph drawn as an SVG (every node, in the order
the run goes, no Mermaid source), help texts that show “workflow/<slug>” as written,
every node type with its whole description in the page's language (中文 from the
catalogue), links to the workflow editor, and an admin save recorded as a published
version only when the graph changed. Then the page in Debian's Chromium: no box
overlaps another, every arrow points down the run but a loop's, photographed to
``docs/admin-workflow.png``."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext

from chat.models import Workflow, WorkflowVersion
from chat.workflows.registry import node_types
from tests.chat.conftest import live_server_url  # noqa: F401  (the fixture, shared)
from tests.studio.conftest import browser  # noqa: F401  (the fixture, shared)

pytestmark = pytest.mark.django_db(transaction=True)
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "admin-workflow.png"

# Support triage: a condition's two branches meet again; a review can send the draft
# back (a loop), and the end is a node of its own.
TRIAGE = {"entry": "recall", "nodes": [
    {"id": "recall", "type": "memory_recall"},
    {"id": "triage", "type": "condition",
     "config": {"when": {"field": "content", "op": "icontains", "value": "refund"},
                "then": "draft", "else": "answer"}},
    {"id": "draft", "type": "llm", "config": {"prompt": "Draft a careful refund answer."}},
    {"id": "check", "type": "condition",
     "config": {"when": {"field": "content", "op": "icontains", "value": "sorry"},
                "then": "review", "else": "draft"}},
    {"id": "review", "type": "human_approval"},
    {"id": "answer", "type": "llm"},
    {"id": "remember", "type": "memory_write"},
    {"id": "done", "type": "end"}],
    "edges": [{"source": "recall", "target": "triage"},
              {"source": "draft", "target": "check"},
              {"source": "review", "target": "remember"},
              {"source": "answer", "target": "remember"},
              {"source": "remember", "target": "done"}]}
RUN_ORDER = [("recall", "triage"), ("triage", "draft"), ("triage", "answer"),
             ("draft", "check"), ("check", "review"), ("review", "remember"),
             ("answer", "remember"), ("remember", "done")]


def form(definition: dict, slug: str = "triage", name: str = "Support triage") -> dict:
    return {"slug": slug, "name_en": name, "name_zh_hans": "", "description_en": "",
            "description_zh_hans": "", "enabled": "on", "default_model": "echo",
            "double_texting": "enqueue", "definition": json.dumps(definition)}


@pytest.fixture
def triage(admin_client) -> Workflow:
    response = admin_client.post(reverse("admin:chat_workflow_add"), form(TRIAGE))
    assert response.status_code == 302, response.content.decode()[-2000:]
    return Workflow.objects.get(slug="triage")


def change_page(client, workflow: Workflow, **headers: str) -> str:
    response = client.get(reverse("admin:chat_workflow_change", args=[workflow.pk]),
                          headers=headers)
    assert response.status_code == 200
    return response.content.decode()


def node_boxes(page: str) -> dict[str, float]:
    """Each drawn node's id and the top of its box."""
    return {node: float(y) for node, y in re.findall(
        r'<g class="wf-node[^"]*" data-node="([^"]+)">.*?<rect class="wf-box" x="[^"]+" '
        r'y="([^"]+)"', page)}


def node_type_help(page: str) -> list[tuple[str, str, str]]:
    """(label, type, description) of each entry of the node-type help, as text."""
    listed = re.search(r'<dl class="workflow-node-types">(.*?)</dl>', page, re.S)
    assert listed, "no node-type help on the page"
    entries = re.findall(r"<dt><strong>(.*?)</strong> <code>(.*?)</code></dt><dd>(.*?)</dd>",
                         listed.group(1), re.S)
    text = [[html.unescape(re.sub(r"<[^>]+>", "", part)) for part in entry]
            for entry in entries]
    return [(label, name, description) for label, name, description in text]


# --- the drawing -------------------------------------------------------------------------


def test_change_page_draws_every_node_in_run_order_as_svg_not_mermaid(admin_client,
                                                                       triage):
    # when: the change page of a saved workflow
    page = change_page(admin_client, triage)

    # then: an inline SVG with a box per node, each row below the one before it
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="wf-drawing"') == 1
    tops = node_boxes(page)
    assert set(tops) == {node["id"] for node in TRIAGE["nodes"]}
    assert all(tops[source] < tops[target] for source, target in RUN_ORDER)
    assert tops["draft"] == tops["answer"]  # the condition's two branches side by side
    # the entry marked, the end a pill, the branches labelled with their config keys
    assert re.search(r'class="wf-node wf-entry" data-node="recall"', page)
    assert re.search(r'class="wf-node wf-terminal" data-node="done"', page)
    labels = re.findall(r'<text class="wf-label[^"]*"[^>]*>([^<]+)</text>', page)
    assert sorted(labels) == ["else", "else", "entry", "then", "then"]
    assert page.count('class="wf-edge wf-loop wf-branch"') == 1  # check → draft, back
    # and no Mermaid source anywhere
    assert "mermaid" not in page.lower() and "-.->" not in page and "graph TD" not in page


def test_drawing_escapes_the_workflows_text(admin_client):
    # given: a workflow whose name holds markup
    admin_client.post(reverse("admin:chat_workflow_add"),
                      form(TRIAGE, name="<img src=x onerror=alert(1)>"))
    flow = Workflow.objects.get(slug="triage")

    page = change_page(admin_client, flow)

    drawing = re.search(r'<svg xmlns="http://www.w3.org/2000/svg".*?</svg>', page, re.S)
    assert drawing and "<img" not in drawing.group(0)
    assert "&lt;img src=x onerror=alert(1)&gt;" in drawing.group(0)


# --- help texts and node types -------------------------------------------------------------


def test_help_texts_show_the_slug_placeholder_as_written(admin_client, triage):
    page = change_page(admin_client, triage)

    # then: “workflow/<slug>” escaped (so the browser shows it), never raw markup
    assert "“workflow/&lt;slug&gt;”" in page
    assert "workflow/<slug>" not in page


def test_node_type_help_lists_every_type_with_its_whole_description(admin_client, triage):
    page = change_page(admin_client, triage)

    listed = node_type_help(page)
    assert [entry[1] for entry in listed] == sorted(node_types())
    with translation.override("en"):
        expected = [(str(kind.label), name, str(kind.description).replace("``", ""))
                    for name, kind in sorted(node_types().items())]
    assert listed == expected
    for label, name, description in listed:
        assert "``" not in description and label, name
        # whole sentences: not cut at the end of a docstring's first line
        assert description.rstrip().endswith("."), (name, description)
        assert description.count("(") == description.count(")"), (name, description)


def test_node_types_are_described_in_chinese_from_the_catalogue(admin_client, triage):
    # when: the page asked for in Simplified Chinese
    page = change_page(admin_client, triage, accept_language="zh-hans")

    # then: the page is Chinese and each type's label and description is the
    # catalogue's translation of its English text
    assert '<html lang="zh-hans"' in page
    with translation.override("en"):
        english = {name: (str(kind.label), str(kind.description))
                   for name, kind in node_types().items()}
    with translation.override("zh-hans"):
        chinese = [(gettext(english[name][0]), name,
                    gettext(english[name][1]).replace("``", ""))
                   for name in sorted(english)]
    assert node_type_help(page) == chinese


# --- the editor, versions ------------------------------------------------------------------


def test_change_page_and_list_link_to_the_workflow_editor(admin_client, triage):
    page = change_page(admin_client, triage)
    listing = admin_client.get(reverse("admin:chat_workflow_changelist")).content.decode()

    editor = reverse("studio:workflow-editor", args=["triage"])
    assert editor == "/studio/workflows/triage/"
    assert re.search(rf'<a href="{editor}"[^>]*>Open in the editor</a>', page)
    assert re.search(r'<a href="/studio/workflows/"[^>]*>Open the workflow editor</a>',
                     listing)


def test_refused_save_keeps_the_editor_link_on_the_saved_slug(admin_client, triage):
    # when: a save refused (a bad slug), the page shown again with the form's errors
    response = admin_client.post(reverse("admin:chat_workflow_change", args=[triage.pk]),
                                 form(TRIAGE, slug="not a slug!"))

    assert response.status_code == 200
    assert 'href="/studio/workflows/triage/"' in response.content.decode()


def test_admin_save_records_a_published_version_only_when_the_graph_changed(admin_client,
                                                                            triage):
    # given: the workflow added in the admin: version 1, published
    first = WorkflowVersion.objects.get(workflow=triage)
    assert (first.number, triage.live_version) == (1, 1) and first.published_at
    assert first.author == get_user_model().objects.get(username="admin")
    change = reverse("admin:chat_workflow_change", args=[triage.pk])

    # when: saved again with the same graph (another field changed)
    same = form(TRIAGE, name="Support triage (renamed)")
    assert admin_client.post(change, same).status_code == 302

    # then: no new version
    assert WorkflowVersion.objects.filter(workflow=triage).count() == 1

    # when: saved with a changed graph
    changed = json.loads(json.dumps(TRIAGE))
    changed["nodes"][5]["config"] = {"prompt": "Answer briefly."}
    assert admin_client.post(change, form(changed)).status_code == 302

    # then: version 2, published and live, its definition the one saved
    latest = WorkflowVersion.objects.filter(workflow=triage).order_by("-number").first()
    triage.refresh_from_db()
    assert latest is not None and latest.number == 2 and latest.published_at
    assert triage.live_version == 2 and latest.definition == changed == triage.definition
    page = change_page(admin_client, triage)
    assert re.search(r'<div class="readonly">2</div>', page)  # the published version


# --- in a browser --------------------------------------------------------------------------


OVERLAPS = """() => {
  const boxes = [...document.querySelectorAll("svg.wf-drawing .wf-node rect")]
    .map(r => r.getBoundingClientRect());
  const labels = [...document.querySelectorAll("svg.wf-drawing .wf-label")]
    .map(t => t.getBoundingClientRect());
  const meet = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom
    && b.top < a.bottom;
  let found = 0;
  boxes.forEach((a, i) => boxes.forEach((b, j) => { if (i < j && meet(a, b)) found++; }));
  labels.forEach(l => boxes.forEach(b => { if (meet(l, b)) found++; }));
  return found;
}"""

ARROWS = """() => [...document.querySelectorAll("svg.wf-drawing path.wf-edge")].map(p => {
  const length = p.getTotalLength();
  const a = p.getPointAtLength(0), b = p.getPointAtLength(length);
  return {loop: p.classList.contains("wf-loop"), down: b.y > a.y};
})"""


def test_change_page_drawing_reads_in_a_browser(browser, live_server_url,  # noqa: F811
                                                 admin_client, triage):
    # given: the operator signed in to the admin (the test client's superuser)
    user = get_user_model().objects.get(username="admin")
    user.set_password("pw-admin-123")
    user.save()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(f"{live_server_url}/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "pw-admin-123")
    page.click("input[type=submit]")

    # when: the workflow's change page
    page.goto(f"{live_server_url}/admin/chat/workflow/{triage.pk}/change/")
    drawing = page.locator("svg.wf-drawing")
    drawing.wait_for()

    # then: every node drawn, nothing overlapping, every arrow down the run but the loop
    assert drawing.locator(".wf-node").count() == len(TRIAGE["nodes"])
    assert page.evaluate(OVERLAPS) == 0
    arrows = page.evaluate(ARROWS)
    assert len(arrows) == len(RUN_ORDER) + 2  # + the loop back + the entry's mark
    assert all(arrow["down"] for arrow in arrows if not arrow["loop"])
    assert [arrow["down"] for arrow in arrows if arrow["loop"]] == [False]
    assert page.get_by_role("link", name="Open in the editor").count() == 1
    assert errors == []
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.locator("fieldset:has(.field-drawing)").screenshot(path=str(SCREENSHOT))
    page.close()
