"""Versions of a workflow (chat.workflows.versions) on the real PostgreSQL: numbering
under a row lock, drafts that leave what runs alone, publishing in place, rolling back
as a new version, the admin's saves recorded only when the graph changed, the admin's
own validation, and the difference between two definitions."""

from __future__ import annotations

import threading

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection

from chat.graph.service import arun_turn
from chat.models import Workflow, WorkflowVersion
from chat.workflows.compiler import aresolve
from chat.workflows.versions import (
    InvalidDefinition,
    diff,
    ensure_history,
    publish,
    record_admin_save,
    save_version,
)
from routing.models import ModelEndpoint

pytestmark = pytest.mark.django_db


def definition(model: str = "echo", *, prompt: str | None = None) -> dict:
    """answer (an llm node of ``model``) → store."""
    config = {"model": model} | ({"prompt": prompt} if prompt else {})
    return {"entry": "answer",
            "nodes": [{"id": "answer", "type": "llm", "config": config},
                      {"id": "store", "type": "memory_write", "config": {}}],
            "edges": [{"source": "answer", "target": "store"}]}


@pytest.fixture
def flow() -> Workflow:
    """A workflow made as a fixture makes it: no versions recorded."""
    return Workflow.objects.create(slug="flow", name="Flow", definition=definition())


@pytest.fixture
def ada():
    return get_user_model().objects.create_user("ada", password="pw-ada-123")


def test_a_workflow_without_versions_gets_its_definition_as_version_one_published(flow):
    # when
    ensure_history(flow)
    ensure_history(flow)  # a second call changes nothing

    # then
    only = WorkflowVersion.objects.get(workflow=flow)
    assert only.number == 1 and only.definition == flow.definition
    assert only.published_at is not None and flow.live_version == 1
    flow.refresh_from_db()
    assert flow.live_version == 1 and flow.version == 1  # no recompile: nothing changed


def test_versions_are_numbered_one_after_another_per_workflow(flow, ada):
    other = Workflow.objects.create(slug="other", name="Other", definition=definition())

    # when
    numbers = [save_version(flow, definition(prompt=f"try {i}"), author=ada).number
               for i in range(3)]
    elsewhere = save_version(other, definition(prompt="elsewhere")).number

    # then: version 1 is what ran before the first save
    assert numbers == [2, 3, 4] and elsewhere == 2
    assert list(flow.versions.values_list("number", flat=True)) == [4, 3, 2, 1]
    assert flow.versions.get(number=3).author == ada


@pytest.mark.django_db(transaction=True)
def test_concurrent_saves_never_take_the_same_number(flow):
    ensure_history(flow)
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def save(i: int) -> None:
        try:
            start.wait()
            save_version(Workflow.objects.get(pk=flow.pk), definition(prompt=f"t{i}"))
        except BaseException as exc:  # reported below, with the thread's failure
            errors.append(exc)
        finally:
            connection.close()

    # when six requests save at the same moment
    threads = [threading.Thread(target=save, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then each got its own number
    assert errors == []
    assert sorted(flow.versions.values_list("number", flat=True)) == [1, 2, 3, 4, 5, 6, 7]


def test_a_draft_leaves_what_runs_alone(flow):
    ensure_history(flow)
    flow.refresh_from_db()
    counter = flow.version

    # when
    draft = save_version(flow, definition("other"), layout={"answer": {"x": 10, "y": 20.5}},
                         note="try another model")

    # then
    flow.refresh_from_db()
    assert draft.number == 2 and draft.published_at is None
    assert draft.layout == {"answer": {"x": 10, "y": 20.5}} and draft.note == "try another model"
    assert flow.definition == definition() and flow.live_version == 1
    assert flow.version == counter  # nothing to recompile


def test_publishing_the_latest_draft_makes_it_live_in_place(flow, ada):
    draft = save_version(flow, definition("other"))
    flow.refresh_from_db()
    counter = flow.version

    # when
    published = publish(flow, draft.number, author=ada)

    # then: the same version, now live; the workflow runs its definition
    assert published.pk == draft.pk and published.published_at is not None
    assert flow.definition == definition("other") and flow.live_version == draft.number
    flow.refresh_from_db()
    assert flow.definition == definition("other") and flow.version == counter + 1
    assert flow.versions.count() == 2


def test_saving_with_publish_makes_the_new_version_live(flow):
    saved = save_version(flow, definition("other"), publish=True)

    flow.refresh_from_db()
    assert saved.published_at is not None and flow.live_version == saved.number == 2
    assert flow.definition == definition("other")


def test_rolling_back_makes_a_new_version_copying_the_old_one(flow, ada):
    save_version(flow, definition("second"), layout={"answer": {"x": 1, "y": 2}},
                 publish=True)
    save_version(flow, definition("third"), publish=True)

    # when version 2 is published again
    rolled = publish(flow, 2, author=ada)

    # then a new version 4 copies it and runs; 2 and 3 are as they were
    assert rolled.number == 4 and rolled.note == "Rolled back to version 2"
    assert rolled.definition == definition("second") and rolled.layout == {
        "answer": {"x": 1, "y": 2}}
    assert rolled.author == ada and rolled.published_at is not None
    flow.refresh_from_db()
    assert flow.live_version == 4 and flow.definition == definition("second")
    assert flow.versions.get(number=3).definition == definition("third")


def test_publishing_an_older_draft_copies_it_too(flow):
    save_version(flow, definition("draft"))
    save_version(flow, definition("newer draft"))

    rolled = publish(flow, 2)

    assert rolled.number == 4 and rolled.definition == definition("draft")
    assert flow.versions.get(number=2).published_at is None


def test_publishing_the_live_version_changes_nothing(flow):
    ensure_history(flow)
    flow.refresh_from_db()
    counter = flow.version

    same = publish(flow, 1)

    flow.refresh_from_db()
    assert same.number == 1 and flow.versions.count() == 1 and flow.version == counter


def test_publishing_a_missing_version_raises(flow):
    with pytest.raises(WorkflowVersion.DoesNotExist):
        publish(flow, 7)


def test_an_invalid_definition_is_refused_with_the_admins_messages(flow):
    broken = {"nodes": [{"id": "answer", "type": "llm", "config": {"model": 5}},
                        {"id": "lost", "type": "end"}], "edges": []}
    flow.definition = broken
    with pytest.raises(ValidationError) as admin:
        flow.full_clean()
    flow.refresh_from_db()

    # when
    with pytest.raises(InvalidDefinition) as refused:
        save_version(flow, broken)

    # then: the same messages as the admin's field error, each with its node
    assert refused.value.message_dict == {"definition": admin.value.message_dict["definition"]}
    assert {p.node for p in refused.value.problems} == {"answer"}
    assert not flow.versions.filter(number__gt=1).exists()


def test_a_sub_workflow_including_its_parent_is_refused_as_the_admin_does(flow):
    Workflow.objects.create(slug="inner", name="Inner", definition={
        "nodes": [{"id": "back", "type": "sub_workflow", "config": {"workflow": "flow"}}],
        "edges": []})
    including = {"nodes": [{"id": "run", "type": "sub_workflow",
                            "config": {"workflow": "inner"}}], "edges": []}

    with pytest.raises(InvalidDefinition) as refused:
        save_version(flow, including)

    assert refused.value.messages == [
        "node “run” (sub_workflow) includes its own workflow (flow → inner → flow)."]


def test_a_version_whose_sub_workflow_was_disabled_since_is_not_published(flow):
    inner = Workflow.objects.create(slug="inner", name="Inner", definition=definition())
    draft = save_version(flow, {"nodes": [{"id": "run", "type": "sub_workflow",
                                           "config": {"workflow": "inner"}}], "edges": []})
    inner.enabled = False
    inner.save()

    with pytest.raises(InvalidDefinition):
        publish(flow, draft.number)

    flow.refresh_from_db()
    assert flow.live_version == 1 and flow.definition == definition()


def test_a_bad_layout_is_refused(flow):
    with pytest.raises(ValidationError) as refused:
        save_version(flow, definition(), layout={"answer": {"x": "left"}})

    assert list(refused.value.message_dict) == ["layout"]
    assert not flow.versions.exists()


def test_an_admin_save_is_recorded_only_when_the_definition_changed(flow, ada):
    # the first save records what was there: version 1
    first = record_admin_save(flow, ada)
    assert first is not None and first.number == 1 and first.author == ada

    # a save that changed only the name records nothing
    flow.name = "Renamed"
    flow.save()
    assert record_admin_save(flow, ada) is None

    # a save that changed the graph is a new published version, keeping node places
    save_version(flow, definition(), layout={"answer": {"x": 5, "y": 6},
                                             "store": {"x": 7, "y": 8}}, publish=True)
    flow.refresh_from_db()
    flow.definition = {"nodes": [{"id": "answer", "type": "llm", "config": {}}],
                       "edges": []}
    flow.save()
    recorded = record_admin_save(flow, ada)

    assert recorded is not None and recorded.number == 3
    assert recorded.published_at is not None and recorded.note == "Saved in the admin"
    assert recorded.layout == {"answer": {"x": 5, "y": 6}}
    flow.refresh_from_db()
    assert flow.live_version == 3 and record_admin_save(flow, ada) is None


def test_diff_names_added_removed_and_changed_nodes_edges_and_entry():
    a = {"entry": "answer",
         "nodes": [{"id": "answer", "type": "llm", "config": {"model": "echo", "prompt": "p"}},
                   {"id": "store", "type": "memory_write", "config": {}},
                   {"id": "old", "type": "end"}],
         "edges": [{"source": "answer", "target": "store"},
                   {"source": "store", "target": "old"}]}
    b = {"entry": "recall",
         "nodes": [{"id": "recall", "type": "memory_recall", "config": {}},
                   {"id": "answer", "type": "llm", "config": {"model": "big", "output": "o"}},
                   {"id": "store", "type": "end", "config": {}}],
         "edges": [{"source": "recall", "target": "answer"},
                   {"source": "answer", "target": "store"}]}

    found = diff(a, b)

    assert found["entry"] == {"a": "answer", "b": "recall"}
    assert found["nodes"]["added"] == [{"id": "recall", "type": "memory_recall"}]
    assert found["nodes"]["removed"] == [{"id": "old", "type": "end"}]
    assert found["nodes"]["changed"] == [
        {"id": "answer", "type": "llm", "fields": [
            {"key": "model", "a": "echo", "b": "big"},
            {"key": "prompt", "a": "p", "b": None},
            {"key": "output", "a": None, "b": "o"}]},
        {"id": "store", "type": "end", "fields": [
            {"key": "type", "a": "memory_write", "b": "end"}]}]
    assert found["edges"] == {"added": [{"source": "recall", "target": "answer"}],
                              "removed": [{"source": "store", "target": "old"}]}


def test_diff_of_equal_definitions_is_empty_and_the_entry_defaults_to_the_first_node():
    explicit = definition()
    implicit = {**definition(), "entry": None}

    assert diff(explicit, implicit) == {
        "entry": None, "nodes": {"added": [], "removed": [], "changed": []},
        "edges": {"added": [], "removed": []}}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_recall", "closed_saver")
async def test_a_draft_does_not_change_what_runs_and_publishing_does():
    # given a workflow answering with "echo", run once (its plan now cached here)
    for name in ("echo", "echo-two"):
        await ModelEndpoint.objects.acreate(name=name, engine="echo")
    flow = await Workflow.objects.acreate(slug="flow", name="Flow", definition=definition())
    first = await arun_turn(conversation_id=None, user="ann", content="hi", model="any",
                            workflow="flow")
    assert first["model"] == "echo"

    # when a draft points the node at "echo-two", the run is unchanged
    draft = await sync_to_async(save_version)(flow, definition("echo-two"))
    drafted = await arun_turn(conversation_id=None, user="ann", content="hi", model="any",
                              workflow="flow")
    assert drafted["model"] == "echo"

    # then once published, the next run in this process takes it, no restart
    await sync_to_async(publish)(flow, draft.number)
    published = await arun_turn(conversation_id=None, user="ann", content="hi", model="any",
                                workflow="flow")
    assert published["model"] == "echo-two"
    plan = await aresolve("flow")
    assert plan is not None and plan.live_version == draft.number
