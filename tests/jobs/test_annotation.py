"""Annotation of replies: the service (rating, correction, tags, who may) and the
studio's JSON endpoints (session sign-in, CSRF, clear errors)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from chat.curated import match_reply, save_pair
from chat.models import QAPair
from jobs.annotation import AnnotationInput, AnnotationRefused, annotate, clean_input
from jobs.models import Annotation
from tests.grants import grant
from tests.jobs.training_data import conversation

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return get_user_model().objects.create_user("alice", password="pw-alice-1")


@pytest.fixture
def bob():
    return get_user_model().objects.create_user("bob", password="pw-bob-12")


def test_annotation_keeps_rating_correction_tags_and_annotator(alice):
    # given
    [reply] = conversation(alice, ("What is 2+2?", "5"))
    # when
    saved = annotate(alice, reply.pk, clean_input(
        {"rating": "down", "corrected_content": "4", "tags": ["math", " Math ", "", "x"]}))
    # then
    saved.refresh_from_db()
    assert (saved.rating, saved.corrected_content, saved.tags) == ("down", "4", ["math", "x"])
    assert saved.annotator == alice and saved.created_at is not None


def test_correction_is_encrypted_at_rest(alice):
    [reply] = conversation(alice, ("q", "a"))
    saved = annotate(alice, reply.pk, AnnotationInput(corrected_content="the secret fix"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT corrected_content FROM jobs_annotation WHERE id = %s",
                       [saved.pk])
        stored = cursor.fetchone()[0]
    assert "the secret fix" not in stored


def test_second_annotation_by_same_person_updates_only_what_it_names(alice):
    [reply] = conversation(alice, ("q", "a"))
    annotate(alice, reply.pk, AnnotationInput(rating="up", tags=["good"]))
    annotate(alice, reply.pk, AnnotationInput(corrected_content="better"))
    [only] = Annotation.objects.all()
    assert (only.rating, only.tags, only.corrected_content) == ("up", ["good"], "better")


def test_someone_elses_reply_is_refused_as_missing(alice, bob):
    [reply] = conversation(alice, ("q", "a"))
    with pytest.raises(AnnotationRefused) as refused:
        annotate(bob, reply.pk, AnnotationInput(rating="up"))
    assert refused.value.status == 404


def test_staff_annotate_and_list_others_only_with_the_permissions(alice):
    # given: alice's reply, annotated by her; a member of the staff with no permission
    [reply] = conversation(alice, ("q", "a"))
    annotate(alice, reply.pk, AnnotationInput(rating="down", corrected_content="fixed"))
    sam = get_user_model().objects.create_user("sam", password="pw-sam-12", is_staff=True)
    client = Client()
    client.force_login(sam)
    url = f"/studio/api/annotations/messages/{reply.pk}/"
    # when / then: is_staff alone opens nothing
    with pytest.raises(AnnotationRefused):
        annotate(sam, reply.pk, AnnotationInput(rating="up"))
    assert client.post(url, '{"rating": "up"}', content_type="application/json") \
        .status_code == 404
    assert client.get("/studio/api/annotations/").json()["data"] == []
    # with the view permission: everyone's annotations, corrections still hidden
    client.force_login(grant(sam, "jobs.view_annotation"))
    [listed] = client.get("/studio/api/annotations/").json()["data"]
    assert (listed["annotator"], listed["corrected_content"]) == ("alice", None)
    # with the content permission too: corrections shown, and any reply annotated
    client.force_login(grant(sam, "chat.view_message_content", "jobs.add_annotation"))
    [listed] = client.get("/studio/api/annotations/").json()["data"]
    assert listed["corrected_content"] == "fixed"
    assert client.post(url, '{"rating": "up"}', content_type="application/json") \
        .status_code == 200


def test_user_messages_cannot_be_annotated(alice):
    [reply] = conversation(alice, ("q", "a"))
    question = reply.conversation.messages.get(role="user")
    with pytest.raises(AnnotationRefused, match="Only assistant replies"):
        annotate(alice, question.pk, AnnotationInput(rating="up"))


@pytest.mark.parametrize(("body", "field"), [
    ({"rating": "meh"}, "rating"),
    ({"tags": "one"}, "tags"),
    ({"tags": ["x" * 51]}, "tags"),
    ({"corrected_content": 3}, "corrected_content"),
    ({"ratting": "up"}, "ratting"),
])
def test_bad_input_is_refused_naming_the_field(body, field):
    with pytest.raises(AnnotationRefused) as refused:
        clean_input(body)
    assert refused.value.field == field


def test_api_annotates_and_lists_with_filters(alice):
    # given
    first, second = conversation(alice, ("q1", "a1"), ("q2", "a2"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.get("/studio/api/annotations/")  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    # when
    for reply, body in ((first, {"rating": "up", "tags": ["kind"]}),
                        (second, {"rating": "down", "corrected_content": "A2"})):
        response = client.post(f"/studio/api/annotations/messages/{reply.pk}/",
                               json.dumps(body), content_type="application/json",
                               HTTP_X_CSRFTOKEN=token)
        assert response.status_code == 200, response.content
    # then
    listed = client.get("/studio/api/annotations/", {"rating": "down"}).json()["data"]
    assert [(a["message_id"], a["corrected_content"]) for a in listed] == [(second.pk, "A2")]
    tagged = client.get("/studio/api/annotations/", {"tag": "kind"}).json()["data"]
    assert [a["message_id"] for a in tagged] == [first.pk]
    assert tagged[0]["annotator"] == "alice" and tagged[0]["model"] == "tiny"


def test_api_refuses_without_csrf_token_or_sign_in(alice):
    [reply] = conversation(alice, ("q", "a"))
    anonymous = Client(enforce_csrf_checks=True)
    url = f"/studio/api/annotations/messages/{reply.pk}/"
    assert anonymous.get("/studio/api/annotations/").status_code == 401
    signed_in = Client(enforce_csrf_checks=True)
    signed_in.force_login(alice)
    response = signed_in.post(url, '{"rating": "up"}', content_type="application/json")
    assert response.status_code == 403
    assert not Annotation.objects.exists()


def test_api_bad_body_gets_a_json_error(alice):
    [reply] = conversation(alice, ("q", "a"))
    client = Client()
    client.force_login(alice)
    url = f"/studio/api/annotations/messages/{reply.pk}/"
    response = client.post(url, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]
    response = client.post(url, '{"rating": "sideways"}', content_type="application/json")
    assert response.json()["error"]["field"] == "rating"


def test_admin_lists_annotations_filtered_by_model_rating_tag_and_date(alice):
    # given
    root = get_user_model().objects.create_superuser("root", password="pw")
    [first] = conversation(alice, ("q1", "a1"), model="m1")
    [second] = conversation(alice, ("q2", "a2"), model="m2")
    annotate(alice, first.pk, AnnotationInput(rating="up", tags=["gold"]))
    annotate(alice, second.pk, AnnotationInput(rating="down", corrected_content="A2"))
    client = Client()
    client.force_login(root)
    url = "/admin/jobs/annotation/"
    # when / then
    for query, shown in (({"rating": "down"}, second), ({"tag": "gold"}, first),
                         ({"message__model": "m1"}, first)):
        page = client.get(url, query)
        assert page.status_code == 200
        ids = {a.pk for a in page.context["cl"].result_list}
        assert ids == {Annotation.objects.get(message=shown).pk}, query
    assert client.get(url, {"updated_at__gte": "2000-01-01 00:00:00+00:00"}).status_code == 200
    detail = client.get(f"{url}{Annotation.objects.get(message=second).pk}/change/")
    assert detail.status_code == 200 and "A2" in detail.text and "a2" in detail.text


def test_curated_answer_matches_a_paraphrase_above_its_threshold_only(alice):
    # given
    refunds = save_pair(QAPair(question="How do I get a refund for my order?",
                               answer="Open Orders, pick the order, press Refund.",
                               threshold=0.6))
    save_pair(QAPair(question="What are your opening hours?", answer="9 to 5.",
                     threshold=0.6))
    # when
    found = match_reply("how can I get my money back for an order")
    # then
    assert found is not None and found.pair_id == refunds.pk
    assert found.answer.startswith("Open Orders") and found.similarity >= 0.6
    assert match_reply("Explain the rules of cricket") is None
    QAPair.objects.update(enabled=False)
    assert match_reply("How do I get a refund for my order?") is None


def test_api_matches_for_the_studio(alice):
    save_pair(QAPair(question="Where is the office?", answer="Berlin.", threshold=0.8))
    client = Client()
    client.force_login(alice)
    hit = client.post("/studio/api/qa/match/", {"text": "Where is the office?"},
                      content_type="application/json").json()["match"]
    assert hit["answer"] == "Berlin." and hit["similarity"] > 0.99
    miss = client.post("/studio/api/qa/match/", {"text": "Bake bread"},
                       content_type="application/json").json()
    assert miss == {"match": None}
    bad = client.post("/studio/api/qa/match/", {"text": 3}, content_type="application/json")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "text"


def test_admin_saves_a_pair_with_its_question_embedded():
    root = get_user_model().objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(root)
    response = client.post("/admin/chat/qapair/add/", {
        "question": " Where is the office? ", "answer": "Berlin.", "threshold": 0.8,
        "enabled": "on"})
    assert response.status_code == 302, response.text
    pair = QAPair.objects.get()
    assert pair.question == "Where is the office?" and len(pair.embedding) == 384
