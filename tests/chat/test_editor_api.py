"""The workflow editor's JSON API (/studio/api/…) with Django's test client on the real
PostgreSQL: who may read and write (401, 403, view-only), CSRF, bad bodies, node types,
workflows (list, create, duplicate), saving drafts and publishing, rolling back, the
difference between versions — and that the editor's save and the admin refuse the same
invalid definitions with the same messages, for cases made from every node type's
config schema."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from chat.models import Workflow, WorkflowVersion
from chat.tools.models import Tool
from chat.workflows.registry import node_types
from routing.models import ModelEndpoint

pytestmark = pytest.mark.django_db

API = "/studio/api"


def definition(model: str = "echo") -> dict:
    return {"entry": "answer",
            "nodes": [{"id": "answer", "type": "llm", "config": {"model": model}},
                      {"id": "store", "type": "memory_write", "config": {}}],
            "edges": [{"source": "answer", "target": "store"}]}


def user_with(username: str, *codenames: str, staff: bool = True):
    user = get_user_model().objects.create_user(username, password=f"pw-{username}-1",
                                                is_staff=staff)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="chat",
                                                        codename__in=codenames))
    return user


def signed_in(user, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def post(client: Client, url: str, body: Any = None, **extra: Any):
    data = body if isinstance(body, str | bytes) else json.dumps(body or {})
    return client.post(url, data, content_type="application/json", **extra)


@pytest.fixture
def flow() -> Workflow:
    return Workflow.objects.create(slug="flow", name="Flow", definition=definition())


@pytest.fixture
def editor() -> Client:
    return signed_in(user_with("eve", "view_workflow", "change_workflow", "add_workflow"))


@pytest.fixture
def viewer() -> Client:
    return signed_in(user_with("vic", "view_workflow"))


# --- who may -----------------------------------------------------------------------------

READS = ["/node-types/", "/workflows/", "/workflows/flow/", "/workflows/flow/versions/",
         "/workflows/flow/versions/1/", "/workflows/flow/diff/?a=1&b=1"]
WRITES = ["/workflows/", "/workflows/flow/versions/", "/workflows/flow/versions/1/publish/"]


@pytest.mark.parametrize("path", READS)
def test_reads_need_sign_in_then_the_view_permission(client, flow, viewer, path):
    anonymous = client.get(API + path)
    outsider = signed_in(user_with("oli", staff=True)).get(API + path)
    not_staff = signed_in(user_with("nat", "view_workflow", staff=False)).get(API + path)

    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "not_signed_in"
    assert outsider.status_code == 403 and outsider.json()["error"]["code"] == "forbidden"
    assert not_staff.status_code == 403
    assert viewer.get(API + path).status_code == 200


@pytest.mark.parametrize("path", WRITES)
def test_writes_need_sign_in_then_the_change_permission(client, flow, viewer, path):
    body = {"slug": "new", "name": "New", "definition": definition(), "layout": {}}

    assert post(client, API + path, body).status_code == 401
    refused = post(viewer, API + path, body)

    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert Workflow.objects.count() == 1 and not WorkflowVersion.objects.filter(
        number__gt=1).exists()


def test_a_view_only_user_reads_the_workflow_and_is_told_they_cannot_change_it(flow,
                                                                                viewer):
    shown = viewer.get(f"{API}/workflows/flow/").json()

    assert shown["workflow"]["can_change"] is False
    assert post(viewer, f"{API}/workflows/validate/", {"definition": {}}).status_code == 200


def test_a_superuser_passes_without_permissions(flow):
    root = get_user_model().objects.create_superuser("root", password="pw-root-1")

    saved = post(signed_in(root), f"{API}/workflows/flow/versions/",
                 {"definition": definition("other"), "layout": {}})

    assert saved.status_code == 201 and saved.json()["version"]["author"] == "root"


def test_a_post_without_the_csrf_token_is_refused(flow):
    user = user_with("eve", "view_workflow", "change_workflow")
    client = signed_in(user, enforce_csrf_checks=True)
    body = {"definition": definition("other"), "layout": {}}

    # when the page's request carries no token
    refused = post(client, f"{API}/workflows/flow/versions/", body)

    # then nothing is saved; with the token (as the page sends it) the save goes through
    assert refused.status_code == 403 and flow.versions.count() == 0
    client.get("/studio/")  # a page that carries the token sets its cookie
    token = client.cookies["csrftoken"].value
    accepted = post(client, f"{API}/workflows/flow/versions/", body, HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201


@pytest.mark.parametrize("body, expected", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"definition": {"nodes": [{"id": "a\\u0000"}]}}', "cannot be stored"),
])
def test_a_bad_body_is_a_400_saying_why(flow, editor, body, expected):
    refused = post(editor, f"{API}/workflows/flow/versions/", body)

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "bad_json"
    assert expected in refused.json()["error"]["message"]


def test_a_method_the_endpoint_does_not_answer_is_a_405(flow, editor):
    assert editor.delete(f"{API}/workflows/flow/").status_code == 405
    assert editor.get(f"{API}/workflows/flow/versions/1/publish/").status_code == 405


# --- what the editor reads ---------------------------------------------------------------


def test_node_types_come_with_their_schemas_and_what_configs_may_name(flow, viewer):
    Workflow.objects.create(slug="off", name="Off", enabled=False, definition=definition())
    Tool.objects.create(name="clock_now", kind="builtin", description="The time.")
    Tool.objects.create(name="hidden", kind="builtin", enabled=False)
    ModelEndpoint.objects.create(name="echo", engine="echo")

    answer = viewer.get(f"{API}/node-types/").json()

    kinds = {kind["type"]: kind for kind in answer["node_types"]}
    assert set(kinds) == set(node_types())
    assert all(isinstance(k["schema"], dict) and k["label"] for k in kinds.values())
    assert kinds["end"]["terminal"] is True and kinds["router"]["router"] is True
    assert kinds["llm"]["router"] is False
    assert {"name": "clock_now", "description": "The time."} in answer["tools"]
    assert "hidden" not in {tool["name"] for tool in answer["tools"]}
    assert answer["workflows"] == [{"slug": "flow", "name": "Flow"}]
    assert answer["models"] == ["echo"]


def test_the_list_shows_each_workflow_with_its_live_and_latest_versions(flow, editor):
    post(editor, f"{API}/workflows/flow/versions/", {"definition": definition("x")})

    listed = editor.get(f"{API}/workflows/").json()["workflows"]

    assert listed == [{"slug": "flow", "name": "Flow", "description": "", "enabled": True,
                       "is_default": False, "live_version": 1, "latest_version": 2,
                       "nodes": 2, "updated_at": listed[0]["updated_at"]}]


def test_opening_a_workflow_gives_its_latest_version_draft_or_not(flow, editor):
    # an old workflow opens at version 1, its definition
    first = editor.get(f"{API}/workflows/flow/").json()
    assert first["workflow"]["live_version"] == 1 and first["workflow"]["can_change"]
    assert first["version"]["number"] == 1 and first["version"]["live"] is True
    assert first["version"]["definition"] == definition()

    # a draft saved since is what opens next, with its node places
    post(editor, f"{API}/workflows/flow/versions/",
         {"definition": definition("x"), "layout": {"answer": {"x": 3, "y": 4}}})
    second = editor.get(f"{API}/workflows/flow/").json()

    assert second["workflow"]["live_version"] == 1
    assert second["version"]["number"] == 2 and second["version"]["live"] is False
    assert second["version"]["published_at"] is None
    assert second["version"]["layout"] == {"answer": {"x": 3, "y": 4}}
    assert editor.get(f"{API}/workflows/nope/").status_code == 404


def test_validate_lists_the_problems_with_their_nodes(flow, viewer):
    broken = {"nodes": [{"id": "answer", "type": "llm", "config": {"model": 5}},
                        {"id": "lost", "type": "end"}], "edges": []}

    answer = post(viewer, f"{API}/workflows/validate/", {"slug": "flow",
                                                         "definition": broken}).json()
    fine = post(viewer, f"{API}/workflows/validate/", {"definition": definition()}).json()

    assert [p["node"] for p in answer["problems"]] == ["answer"]
    assert "“model”" in answer["problems"][0]["message"]
    assert fine == {"problems": []}


# --- what the editor writes --------------------------------------------------------------


def test_a_draft_is_saved_then_published(flow, editor):
    saved = post(editor, f"{API}/workflows/flow/versions/",
                 {"definition": definition("x"), "layout": {}, "note": "try x"})
    assert saved.status_code == 201
    draft = saved.json()["version"]
    assert draft["number"] == 2 and draft["note"] == "try x" and draft["author"] == "eve"
    assert draft["live"] is False and draft["published_at"] is None
    flow.refresh_from_db()
    assert flow.definition == definition()  # a draft does not change what runs

    published = post(editor, f"{API}/workflows/flow/versions/2/publish/")

    assert published.status_code == 200
    assert published.json()["version"]["number"] == 2
    assert published.json()["version"]["live"] is True
    flow.refresh_from_db()
    assert flow.definition == definition("x") and flow.live_version == 2


def test_a_save_may_publish_at_once(flow, editor):
    saved = post(editor, f"{API}/workflows/flow/versions/",
                 {"definition": definition("x"), "publish": True}).json()["version"]

    assert saved["live"] is True and saved["published_at"] is not None


def test_rolling_back_publishes_a_copy_as_the_newest_version(flow, editor):
    post(editor, f"{API}/workflows/flow/versions/", {"definition": definition("x"),
                                                      "publish": True})

    rolled = post(editor, f"{API}/workflows/flow/versions/1/publish/").json()["version"]
    listed = editor.get(f"{API}/workflows/flow/versions/").json()["versions"]

    assert rolled["number"] == 3 and rolled["note"] == "Rolled back to version 1"
    assert rolled["definition"] == definition() and rolled["live"] is True
    assert [(v["number"], v["live"]) for v in listed] == [(3, True), (2, False), (1, False)]
    assert "definition" not in listed[0]
    assert post(editor, f"{API}/workflows/flow/versions/9/publish/").status_code == 404
    assert editor.get(f"{API}/workflows/flow/versions/{10**30}/").status_code == 404


def test_an_invalid_save_is_a_400_listing_the_problems(flow, editor):
    broken = {"nodes": [{"id": "answer", "type": "ghost"}], "edges": []}

    refused = post(editor, f"{API}/workflows/flow/versions/", {"definition": broken})

    error = refused.json()["error"]
    assert refused.status_code == 400 and error["code"] == "invalid_definition"
    assert error["problems"][0]["node"] == "answer"
    assert "unknown type “ghost”" in error["problems"][0]["message"]
    assert not flow.versions.filter(number__gt=1).exists()


@pytest.mark.parametrize("body, field", [
    ({"definition": definition(), "layout": [1]}, "layout"),
    ({"definition": definition(), "note": 5}, "note"),
    ({"definition": definition(), "note": "n" * 201}, "note"),
    ({"definition": definition(), "publish": "yes"}, "publish"),
    ({"layout": {}}, "definition"),
])
def test_bad_fields_of_a_save_are_named(flow, editor, body, field):
    refused = post(editor, f"{API}/workflows/flow/versions/", body)

    assert refused.status_code == 400
    assert list(refused.json()["error"]["fields"]) == [field]


def test_a_new_workflow_starts_with_one_llm_node_as_version_one(editor):
    made = post(editor, f"{API}/workflows/", {"slug": "fresh", "name": "Fresh",
                                              "description": "New."})

    assert made.status_code == 201
    assert made.json()["workflow"]["slug"] == "fresh"
    fresh = Workflow.objects.get(slug="fresh")
    assert fresh.definition == {"entry": "start", "edges": [],
                                "nodes": [{"id": "start", "type": "llm", "config": {}}]}
    assert fresh.name_en == "Fresh" and fresh.description_en == "New."
    version = fresh.versions.get()
    assert version.number == 1 and version.published_at and version.author.username == "eve"
    assert fresh.live_version == 1


def test_a_name_given_in_chinese_is_the_english_one_too_until_translated(editor):
    post(editor, f"{API}/workflows/?lang=zh-hans", {"slug": "kefu", "name": "客服"},
         HTTP_ACCEPT_LANGUAGE="zh-hans")

    made = Workflow.objects.get(slug="kefu")
    assert made.name_zh_hans == "客服" and made.name_en == "客服"


def test_a_duplicate_copies_the_latest_version_with_its_layout(flow, editor):
    post(editor, f"{API}/workflows/flow/versions/",
         {"definition": definition("x"), "layout": {"answer": {"x": 1, "y": 1}}})

    made = post(editor, f"{API}/workflows/", {"slug": "copy", "name": "Copy",
                                              "from": "flow"})

    assert made.status_code == 201
    copy = Workflow.objects.get(slug="copy")
    version = copy.versions.get()
    assert copy.definition == version.definition == definition("x")
    assert version.layout == {"answer": {"x": 1, "y": 1}}
    assert version.note == "Copy of “flow” version 2"


@pytest.mark.parametrize("body, field", [
    ({"slug": "flow", "name": "Again"}, "slug"),
    ({"slug": "has space", "name": "X"}, "slug"),
    ({"slug": "ok", "name": ""}, "name"),
    ({"slug": 5, "name": "X"}, "slug"),
])
def test_a_workflow_that_cannot_be_made_is_a_400_naming_the_field(flow, editor, body,
                                                                   field):
    refused = post(editor, f"{API}/workflows/", body)

    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid"
    assert field in refused.json()["error"]["fields"]


def test_creating_needs_the_add_permission(flow):
    changer = signed_in(user_with("cat", "view_workflow", "change_workflow"))

    assert post(changer, f"{API}/workflows/", {"slug": "n", "name": "N"}).status_code == 403


def test_an_admin_edit_shows_as_the_newest_version(admin_client, flow, viewer):
    data = admin_form(admin_client, flow) | {"definition": json.dumps(definition("x"))}

    assert admin_client.post(f"/admin/chat/workflow/{flow.pk}/change/", data).status_code \
        == 302

    listed = viewer.get(f"{API}/workflows/flow/versions/").json()["versions"]
    assert [(v["number"], v["live"], v["author"]) for v in listed][0] == (1, True, "admin")
    assert viewer.get(f"{API}/workflows/flow/").json()["version"]["definition"] == \
        definition("x")


def test_diff_between_two_versions(flow, editor):
    changed = definition("x")
    changed["nodes"].append({"id": "done", "type": "end", "config": {}})
    changed["edges"].append({"source": "store", "target": "done"})
    post(editor, f"{API}/workflows/flow/versions/", {"definition": changed})

    answer = editor.get(f"{API}/workflows/flow/diff/?a=1&b=2").json()
    defaults = editor.get(f"{API}/workflows/flow/diff/").json()

    assert answer == defaults == {
        "a": 1, "b": 2, "entry": None,
        "nodes": {"added": [{"id": "done", "type": "end"}], "removed": [],
                  "changed": [{"id": "answer", "type": "llm",
                               "fields": [{"key": "model", "a": "echo", "b": "x"}]}]},
        "edges": {"added": [{"source": "store", "target": "done"}], "removed": []}}
    assert editor.get(f"{API}/workflows/flow/diff/?a=1&b=7").status_code == 404
    assert editor.get(f"{API}/workflows/flow/diff/?a=one").status_code == 400


# --- the admin and the editor refuse alike -----------------------------------------------

WRONG: tuple[tuple[Any, set[str]], ...] = (
    (12345, {"integer", "number"}), ("text", {"string"}), (True, {"boolean"}),
    ([1], {"array"}), ({"k": 1}, {"object"}), (None, {"null"}), (1.5, {"number"}))


def wrong_value(schema: dict[str, Any]) -> Any:
    """A value the property's ``type`` (or ``enum``) does not allow."""
    allowed = schema.get("type")
    if allowed is None:
        return "not-one-of-the-choices" if "enum" in schema else None
    allowed = {allowed} if isinstance(allowed, str) else set(allowed)
    return next(value for value, kinds in WRONG if not kinds & allowed)


def invalid_configs(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Configs ``schema`` refuses: each property wrong-typed (also inside a list of
    objects), an unknown key when there may be none, the required keys missing."""
    cases = []
    for key, sub in schema.get("properties", {}).items():
        value = wrong_value(sub)
        if value is not None:
            cases.append((f"{key} wrong-typed", {key: value}))
        items = sub.get("items", {})
        for inner, inner_schema in items.get("properties", {}).items():
            value = wrong_value(inner_schema)
            if value is not None:
                cases.append((f"{key}[0].{inner} wrong-typed", {key: [{inner: value}]}))
    if schema.get("additionalProperties") is False:
        cases.append(("unknown key", {"no_such_setting": 1}))
    if schema.get("required"):
        cases.append(("required missing", {}))
    return cases


def with_node(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """Node "n" of type ``kind`` with ``config``, going on to an end node "done"."""
    node_type = node_types()[kind]
    nodes = [{"id": "n", "type": kind, "config": config}]
    if node_type.terminal:
        return {"nodes": nodes, "edges": []}
    edges = [] if node_type.router else [{"source": "n", "target": "done"}]
    return {"nodes": [*nodes, {"id": "done", "type": "end", "config": {}}], "edges": edges}


CASES: list[tuple[str, str, Any]] = [(kind, name, with_node(kind, config))
         for kind, node_type in sorted(node_types().items())
         for name, config in invalid_configs(node_type.schema)]
CASES += [("sub_workflow", "a missing workflow", with_node("sub_workflow",
                                                         {"workflow": "nowhere"})),
          ("sub_workflow", "a disabled workflow", with_node("sub_workflow", {"workflow": "off"})),
          ("sub_workflow", "itself", with_node("sub_workflow", {"workflow": "flow"})),
          ("sub_workflow", "itself through another", with_node("sub_workflow",
                                                              {"workflow": "back"})),
          ("(definition)", "not an object", ["nodes"]),
          ("(definition)", "dangling edge", {"nodes": [{"id": "a", "type": "end"}],
                                             "edges": [{"source": "a", "target": "b"}]})]


def admin_form(client: Client, workflow: Workflow) -> dict[str, Any]:
    """The admin's change form of ``workflow`` as the browser would post it back."""
    form = client.get(f"/admin/chat/workflow/{workflow.pk}/change/").context[
        "adminform"].form
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if isinstance(field, forms.BooleanField):
            if value:
                data[name] = "on"
        elif value is not None:
            data[name] = value
    return data


def admin_errors(page: str) -> set[str]:
    found = re.search(r'<ul class="errorlist" id="id_definition_error">(.*?)</ul>', page,
                      re.S)
    assert found, "the admin showed no error on the definition"
    return {html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", found.group(1),
                                                        re.S)}


def test_every_case_is_made_for_every_node_type():
    kinds = {kind for kind, _name, _definition in CASES}

    assert kinds >= set(node_types()) - {
        kind for kind, node_type in node_types().items()
        if not invalid_configs(node_type.schema)}
    assert len(CASES) > 2 * len(node_types())


@pytest.mark.parametrize("kind, case, broken", CASES,
                         ids=[f"{kind}: {case}" for kind, case, _d in CASES])
def test_the_editor_and_the_admin_refuse_alike(admin_client, flow, settings, kind, case,
                                               broken):
    settings.OPENCLAW_WORKFLOW_HTTP_HOSTS = ["tools.internal"]
    Workflow.objects.create(slug="off", name="Off", enabled=False, definition=definition())
    Workflow.objects.create(slug="back", name="Back", definition=with_node(
        "sub_workflow", {"workflow": "flow"}))
    data = admin_form(admin_client, flow) | {"definition": json.dumps(broken)}

    # when the admin's change form and the editor's save get the same definition
    page = admin_client.post(f"/admin/chat/workflow/{flow.pk}/change/", data)
    saved = post(admin_client, f"{API}/workflows/flow/versions/", {"definition": broken})

    # then both refuse it, with the same sentences
    assert page.status_code == 200 and saved.status_code == 400
    said = {problem["message"] for problem in saved.json()["error"]["problems"]}
    assert said and said == admin_errors(page.content.decode())
    flow.refresh_from_db()
    assert flow.definition == definition() and flow.versions.count() <= 1
