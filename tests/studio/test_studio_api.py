"""The studio page's HTTP side with Django's test client: sign-in required, the
language switch, and the small JSON API behind the conversation list and the memory
panel (search, rename, delete, only one's own)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model

from chat.models import Conversation, MemoryItem

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada(client):
    user = get_user_model().objects.create_user("ada", password="pw-ada-123")
    client.force_login(user)
    return user


def test_the_page_asks_for_sign_in_first(client):
    response = client.get("/studio/")

    assert response.status_code == 302 and response["Location"].startswith("/studio/login/")


def test_the_page_carries_its_config_and_serves_its_own_assets(client, ada):
    # when
    response = client.get("/studio/")

    # then
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="studio-config"' in html and "/static/studio/studio.js" in html
    assert "http://" not in html.split("<body", 1)[1].replace("http://www.w3.org", "")
    assert client.get("/jsi18n/").status_code == 200


def test_lang_parameter_switches_the_language_and_remembers_it(client, ada):
    # when
    response = client.get("/studio/?lang=zh-hans")

    # then
    assert response.status_code == 302 and response.cookies["django_language"].value == \
        "zh-hans"
    assert '<html lang="zh-hans"' in client.get("/studio/").content.decode()


def test_conversations_are_listed_searched_renamed_and_deleted(client, ada):
    mine = Conversation.objects.create(user="ada", owner=ada, title="Trip to Lisbon")
    Conversation.objects.create(user="ada", owner=ada, title="Tax questions")
    theirs = Conversation.objects.create(user="bob", title="Trip to Lisbon too")

    # when / then: search
    found = client.get("/studio/api/conversations/?q=lisbon").json()["conversations"]
    assert [c["id"] for c in found] == [str(mine.pk)]

    # rename
    answer = client.post(f"/studio/api/conversations/{mine.pk}/",
                         json.dumps({"title": "  Lisbon\n in May "}),
                         content_type="application/json")
    assert answer.json()["title"] == "Lisbon in May"
    assert client.post(f"/studio/api/conversations/{mine.pk}/", json.dumps({"title": ""}),
                       content_type="application/json").status_code == 400

    # someone else's is not there
    assert client.get(f"/studio/api/conversations/{theirs.pk}/").status_code == 404
    assert client.delete(f"/studio/api/conversations/{theirs.pk}/").status_code == 404

    # delete
    assert client.delete(f"/studio/api/conversations/{mine.pk}/").status_code == 200
    assert not Conversation.objects.filter(pk=mine.pk).exists()
    assert Conversation.objects.filter(pk=theirs.pk).exists()


def test_a_memory_hit_can_be_deleted_by_its_owner_only(client, ada):
    vector = [0.0] * 383 + [1.0]
    mine = MemoryItem.objects.create(user="ada", owner=ada, text="likes tea", embedding=vector)
    theirs = MemoryItem.objects.create(user="bob", text="likes coffee", embedding=vector)

    # when
    assert client.post(f"/studio/api/memories/{theirs.pk}/delete/").status_code == 404
    assert client.post(f"/studio/api/memories/{mine.pk}/delete/").status_code == 200

    # then
    assert list(MemoryItem.objects.values_list("user", flat=True)) == ["bob"]


def test_the_sign_in_page_switches_language_too(client):
    # when
    page = client.get("/studio/login/").content.decode()
    response = client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/studio/login/"})

    # then
    assert 'value="zh-hans"' in page
    assert response.status_code == 302 and response["Location"] == "/studio/login/"
    assert '<html lang="zh-hans"' in client.get("/studio/login/").content.decode()
