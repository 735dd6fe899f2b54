"""Dataset export: chat-format JSONL with corrections applied, flagged (PII, secrets)
conversations left out unless asked for, versions, hashes and clear refusals."""

from __future__ import annotations

import hashlib
import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from jobs.annotation import AnnotationInput, annotate
from jobs.datasets import DatasetRefused, dataset_rows, export_dataset, flag_reasons
from jobs.models import Dataset
from tests.grants import grant
from tests.jobs.training_data import conversation

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return get_user_model().objects.create_user("alice", password="pw", is_staff=True)


def test_corrections_replace_replies_and_flagged_conversations_are_left_out(alice):
    # given
    [fixed] = conversation(alice, ("Capital of France?", "Lyon"))
    annotate(alice, fixed.pk, AnnotationInput(rating="down", corrected_content="Paris"))
    conversation(alice, ("Mail me", "Sure: write to jane.doe@example.com"))
    conversation(alice, ("My key?", "It is sk-abcdefghijklmnopqrstuvwx"))
    [good] = conversation(alice, ("Hi", "Hello!"))
    annotate(alice, good.pk, AnnotationInput(rating="up"))
    # when
    dataset = export_dataset("support", {"user": "alice"})
    # then
    rows = dataset_rows(dataset)
    assert rows == [
        {"messages": [{"role": "user", "content": "Capital of France?"},
                      {"role": "assistant", "content": "Paris"}]},
        {"messages": [{"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello!"}]},
    ]
    assert (dataset.line_count, dataset.excluded_count, dataset.version) == (2, 2, 1)
    assert dataset.sha256 == hashlib.sha256(bytes(dataset.content)).hexdigest()


def test_flagged_content_is_kept_when_explicitly_included(alice):
    conversation(alice, ("Mail me", "Sure: write to jane.doe@example.com"))
    dataset = export_dataset("with-pii", include_flagged=True)
    assert dataset.line_count == 1 and dataset.include_flagged
    assert "jane.doe@example.com" in bytes(dataset.content).decode()


def test_a_reply_rated_down_without_correction_ends_the_line(alice):
    first, bad, _after = conversation(alice, ("a", "good one"), ("b", "bad one"),
                                      ("c", "after the bad one"))
    annotate(alice, bad.pk, AnnotationInput(rating="down"))
    [row] = dataset_rows(export_dataset("cut"))
    assert [m["content"] for m in row["messages"]] == ["a", "good one"]


def test_same_selection_gives_same_hash_and_the_next_version(alice):
    conversation(alice, ("q", "a"))
    first, second = export_dataset("d"), export_dataset("d")
    assert (first.version, second.version) == (1, 2)
    assert first.sha256 == second.sha256


def test_filters_select_by_rating_tag_and_model(alice):
    [up] = conversation(alice, ("q1", "a1"), model="m1")
    [down] = conversation(alice, ("q2", "a2"), model="m2")
    annotate(alice, up.pk, AnnotationInput(rating="up", tags=["gold"]))
    annotate(alice, down.pk, AnnotationInput(rating="down", corrected_content="A2"))
    by_tag = dataset_rows(export_dataset("t", {"tag": "gold"}))
    by_model = dataset_rows(export_dataset("m", {"model": "m2"}))
    assert [r["messages"][1]["content"] for r in by_tag] == ["a1"]
    assert [r["messages"][1]["content"] for r in by_model] == ["A2"]


@pytest.mark.parametrize(("name", "filters", "field"), [
    ("ok", {"colour": "red"}, "colour"),
    ("ok", {"rating": "meh"}, "rating"),
    ("ok", {"since": "yesterday"}, "since"),
    ("ok", {"conversation_ids": ["not-a-uuid"]}, "conversation_ids"),
    ("bad name!", {}, "name"),
])
def test_bad_filters_are_refused_naming_them(alice, name, filters, field):
    conversation(alice, ("q", "a"))
    with pytest.raises(DatasetRefused) as refused:
        export_dataset(name, filters)
    assert refused.value.field == field


def test_empty_selection_is_refused_and_says_why(alice):
    conversation(alice, ("q", "call +44 20 7946 0958 now"))
    with pytest.raises(DatasetRefused, match="1 left out as flagged"):
        export_dataset("empty")


def test_secrets_and_pii_are_detected():
    assert flag_reasons("key AKIAABCDEFGHIJKLMNOP") == ["secret"]
    assert flag_reasons("password: hunter2hunter2") == ["secret"]
    assert flag_reasons("-----BEGIN RSA PRIVATE KEY-----") == ["secret"]
    assert flag_reasons("write to a@b.example") == ["email"]
    assert flag_reasons("nothing to see") == []


def test_api_exports_for_staff_with_the_dataset_and_content_permissions_only(alice):
    conversation(alice, ("q", "a"))
    client = Client()
    client.force_login(alice)
    body = json.dumps({"name": "api"})
    refused = client.post("/studio/api/datasets/", body, content_type="application/json")
    assert refused.status_code == 403
    assert "jobs.add_dataset" in refused.json()["error"]["message"]
    client.force_login(grant(alice, "jobs.add_dataset"))
    refused = client.post("/studio/api/datasets/", body, content_type="application/json")
    assert "chat.view_message_content" in refused.json()["error"]["message"]
    client.force_login(grant(alice, "chat.view_message_content"))
    response = client.post("/studio/api/datasets/", body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["line_count"] == 1
    other = get_user_model().objects.create_user("eve", password="pw")
    client.force_login(other)
    assert client.get("/studio/api/datasets/").status_code == 403


def test_admin_exports_a_dataset_and_explains_an_empty_selection(alice):
    conversation(alice, ("q", "a"))
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    url = "/admin/jobs/dataset/add/"
    added = client.post(url, {"name": "adm", "filters": '{"user": "alice"}'})
    assert added.status_code == 302, added.text
    refused = client.post(url, {"name": "adm", "filters": '{"user": "nobody"}'}, follow=True)
    assert "select no conversation" in refused.text
    bad = client.post(url, {"name": "adm", "filters": '{"colour": 1}'})
    assert "Unknown filter" in bad.text
    assert list(Dataset.objects.values_list("name", "version")) == [("adm", 1)]
    download = client.get(f"/admin/jobs/dataset/{Dataset.objects.get().pk}/download/")
    assert download.status_code == 200 and b'"messages"' in download.content
