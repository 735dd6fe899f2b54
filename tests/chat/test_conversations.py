"""Conversations at rest: encrypted content (a raw SELECT shows none), re-encryption
with a new key, the admin's content permission, and the seed's session JSON through
the service, the admin action and import view, the CLI and the HTTP API."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from chat.conversations import (
    ConversationError,
    export_session,
    import_session,
    start_turn,
    window,
)
from chat.models import EMBEDDING_DIMENSIONS, Conversation, MemoryItem, Message
from core.crypto import new_key_spec, parse_keys
from routing.keys import create_key
from tests.chat.test_graph import forget_checkpoints

pytestmark = pytest.mark.django_db(transaction=True)

SESSION = {
    "session_id": "0b5c3f4e-8f1a-4c1e-9a55-3d2b1c0e9f10",
    "messages": [
        {"role": "system", "content": "You are terse.", "timestamp": "2026-11-01T10:00:00Z"},
        {"role": "user", "content": "My cat is called Pixel.",
         "timestamp": "2026-11-01T10:00:01Z"},
        {"role": "assistant", "content": "Noted.", "timestamp": "2026-11-01T10:00:02Z"},
        {"role": "user", "content": [{"type": "text", "text": "And my dog is Byte."}],
         "timestamp": 1793527203},
        {"role": "assistant", "content": "Noted too.", "timestamp": "2026-11-01T10:00:04Z"},
    ],
    "context_vectors": [[0.0] * (EMBEDDING_DIMENSIONS - 1) + [1.0]],
}


@pytest.fixture
def no_workers(monkeypatch):
    """Import enqueues remembering; these tests look at the rows only."""
    monkeypatch.setattr("chat.conversations._enqueue_remember", lambda ids: None)


def comparable(session: dict) -> dict:
    return {**session, "messages": [{**m, "timestamp": None} for m in session["messages"]]}


def test_raw_select_of_messages_shows_no_plaintext(no_workers):
    started = start_turn(None, "alice", "the launch code is tangerine-42", "echo")

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM chat_message")
        dump = repr(cursor.fetchall())

    assert "tangerine" not in dump and "v1:" in dump
    assert Message.objects.get(pk=started.message["id"]).content == \
        "the launch code is tangerine-42"


def test_rotate_data_reencrypts_messages_with_the_current_key(settings, no_workers):
    forget_checkpoints()
    # given content sealed with key "old"
    old = parse_keys(new_key_spec("old"))
    settings.ENCRYPTION_KEYS = old
    started = start_turn(None, "bob", "rotate me please", "echo")

    # when "new" becomes the current key and the data is rotated
    settings.ENCRYPTION_KEYS = {**parse_keys(new_key_spec("new")), **old}
    out = io.StringIO()
    call_command("keys", "rotate-data", stdout=out)

    # then every message is sealed with "new", and reads back without "old"
    with connection.cursor() as cursor:
        cursor.execute("SELECT content FROM chat_message")
        assert [row[0].split(":")[1] for row in cursor.fetchall()] == ["new"]
    assert "chat.Message.content: 1 re-encrypted" in out.getvalue()
    settings.ENCRYPTION_KEYS = {"new": settings.ENCRYPTION_KEYS["new"]}
    assert Message.objects.get(pk=started.message["id"]).content == "rotate me please"


def test_rotate_data_fails_loudly_on_a_value_no_key_opens(settings, no_workers):
    forget_checkpoints()
    settings.ENCRYPTION_KEYS = parse_keys(new_key_spec("lost"))
    start_turn(None, "carl", "sealed with a key that will be lost", "echo")
    settings.ENCRYPTION_KEYS = parse_keys(new_key_spec("new"))

    with pytest.raises(CommandError, match="could not be decrypted"):
        call_command("keys", "rotate-data", stdout=io.StringIO(), stderr=io.StringIO())


def test_session_round_trips_through_export_and_import(no_workers):
    # when
    conversation = import_session(SESSION, "dora")
    exported = export_session(conversation)

    # then
    assert exported["session_id"] == SESSION["session_id"]
    assert comparable(exported)["messages"] == comparable(SESSION)["messages"]
    assert exported["messages"][3]["timestamp"] == "2026-11-01T10:00:03+00:00"
    assert exported["context_vectors"] == SESSION["context_vectors"]
    turns = list(conversation.messages.order_by("id").values_list("turn", flat=True))
    assert turns == [0, 1, 1, 2, 2] and conversation.turns == 2
    again = import_session(exported, "dora", new_id=True)
    assert again.pk != conversation.pk
    assert comparable(export_session(again))["messages"] == comparable(exported)["messages"]


def test_imported_conversation_continues_with_its_window(no_workers, settings):
    settings.OPENCLAW_MEMORY_WINDOW = 10
    conversation = import_session(SESSION, "dora")

    started = start_turn(str(conversation.pk), "dora", "What are my pets called?", "echo")
    seen = window(started.conversation_id, started.message)

    assert started.message["turn"] == 3
    assert [m["content"] for m in seen][:2] == ["You are terse.", "My cat is called Pixel."]
    assert seen[-1]["content"] == "What are my pets called?"


@pytest.mark.parametrize(("session", "complaint"), [
    ([], "must be a JSON object"),
    ({**SESSION, "messages": "hi"}, "“messages” must be a list"),
    ({**SESSION, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0] must be"),
    ({**SESSION, "messages": [{"role": "user", "content": ""}]}, "messages[0].content"),
    ({**SESSION, "messages": [{"role": "user", "content": "x", "timestamp": "soon"}]},
     "messages[0].timestamp"),
    ({**SESSION, "context_vectors": [[1.0, 2.0]]}, "context_vectors[0] must be 384"),
    ({**SESSION, "session_id": "not-a-uuid"}, "is not a UUID"),
])
def test_bad_sessions_are_refused_with_the_reason_and_store_nothing(session, complaint,
                                                                     no_workers):
    with pytest.raises(ConversationError, match=complaint.replace("[", r"\[")
                       .replace("]", r"\]")):
        import_session(session, "erin")

    assert Conversation.objects.count() == 0 and Message.objects.count() == 0


def test_importing_an_existing_session_id_is_refused(no_workers):
    import_session(SESSION, "fay")

    with pytest.raises(ConversationError, match="already exists"):
        import_session(SESSION, "fay")


def test_cli_exports_and_imports_a_session(tmp_path, no_workers):
    source = tmp_path / "session.json"
    source.write_text(json.dumps(SESSION))
    out = io.StringIO()

    call_command("conversations", "import", str(source), "--user", "gus", stdout=out,
                 stderr=io.StringIO())
    conversation_id = out.getvalue().strip()
    target = tmp_path / "out.json"
    call_command("conversations", "export", conversation_id, "-o", str(target),
                 stderr=io.StringIO())

    assert conversation_id == SESSION["session_id"]
    assert comparable(json.loads(target.read_text()))["messages"] == \
        comparable(SESSION)["messages"]
    with pytest.raises(CommandError, match="not valid JSON"):
        bad = tmp_path / "bad.json"
        bad.write_text("{")
        call_command("conversations", "import", str(bad), "--user", "gus")
    with pytest.raises(CommandError, match="no conversation"):
        call_command("conversations", "export", str(uuid.uuid4()))


def test_api_imports_and_exports_only_the_keys_own_conversations(no_workers):
    _key, secret = create_key("exporter")
    _other, other_secret = create_key("someone else")
    client = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}

    created = client.post("/v1/conversations/import", json.dumps(SESSION),
                          content_type="application/json", **auth)
    exported = client.get(f"/v1/conversations/{SESSION['session_id']}/export", **auth)
    foreign = client.get(f"/v1/conversations/{SESSION['session_id']}/export",
                         HTTP_AUTHORIZATION=f"Bearer {other_secret}")
    duplicate = client.post("/v1/conversations/import", json.dumps(SESSION),
                            content_type="application/json", **auth)
    fresh = client.post("/v1/conversations/import?new_id=true", json.dumps(SESSION),
                        content_type="application/json", **auth)
    anonymous = client.get(f"/v1/conversations/{SESSION['session_id']}/export")
    broken = client.post("/v1/conversations/import", "{", content_type="application/json",
                         **auth)

    assert created.status_code == 201 and created.json()["messages"] == 5
    assert exported.status_code == 200
    assert comparable(exported.json())["messages"] == comparable(SESSION)["messages"]
    assert foreign.status_code == 404
    assert foreign.json()["error"]["code"] == "conversation_not_found"
    assert duplicate.status_code == 409
    assert fresh.status_code == 201 and fresh.json()["id"] != SESSION["session_id"]
    assert anonymous.status_code == 401
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"


@pytest.fixture
def staff():
    def make(name: str, *permissions: str) -> Client:
        user = User.objects.create_user(name, password="pw", is_staff=True)
        for codename in permissions:
            user.user_permissions.add(Permission.objects.get(codename=codename))
        client = Client()
        client.force_login(user)
        return client

    return make


def test_admin_shows_decrypted_content_only_with_the_permission(staff, no_workers):
    conversation = import_session(SESSION, "hal")
    message = conversation.messages.get(turn=1, role="user")
    url = f"/admin/chat/message/{message.pk}/change/"
    reader = staff("reader", "view_message", "view_message_content")
    viewer = staff("viewer", "view_message")

    assert "My cat is called Pixel." in reader.get(url).content.decode()
    page = viewer.get(url).content.decode()
    assert "My cat is called Pixel." not in page and "encrypted" in page


def test_admin_exports_and_imports_session_json(staff, no_workers):
    conversation = import_session(SESSION, "ida")
    admin = staff("admin", "view_conversation", "add_conversation", "view_message_content")
    viewer = staff("plainviewer", "view_conversation")
    action = {"action": "export_sessions", "_selected_action": [str(conversation.pk)]}

    exported = admin.post("/admin/chat/conversation/", action)
    refused = viewer.post("/admin/chat/conversation/", action)
    conversation.delete()
    upload = io.BytesIO(exported.content)
    upload.name = "session.json"
    imported = admin.post("/admin/chat/conversation/import/", {"file": upload})

    assert exported["Content-Disposition"].startswith("attachment")
    assert json.loads(exported.content)["session_id"] == SESSION["session_id"]
    assert refused.status_code == 403
    assert imported.status_code == 302
    assert comparable(export_session(Conversation.objects.get(pk=SESSION["session_id"])))[
        "messages"] == comparable(SESSION)["messages"]


def test_admin_import_explains_a_bad_file(staff, no_workers):
    admin = staff("importer", "view_conversation", "add_conversation")
    upload = io.BytesIO(json.dumps({**SESSION, "messages": [{"role": "x"}]}).encode())
    upload.name = "session.json"

    page = admin.post("/admin/chat/conversation/import/", {"file": upload})

    assert page.status_code == 200 and "messages[0] must be" in page.content.decode()
    assert Conversation.objects.count() == 0


def test_staff_see_and_delete_only_their_own_memories(staff, no_workers):
    ann = staff("ann")
    User.objects.create_user("ben")
    vector = [1.0] + [0.0] * (EMBEDDING_DIMENSIONS - 1)
    own = MemoryItem.objects.create(user="ann", owner=User.objects.get(username="ann"),
                                    text="ann likes tea", embedding=vector)
    other = MemoryItem.objects.create(user="ben", owner=User.objects.get(username="ben"),
                                      text="ben likes coffee", embedding=vector)

    listing = ann.get("/admin/chat/memoryitem/").content.decode()
    foreign = ann.get(f"/admin/chat/memoryitem/{other.pk}/change/")
    deleted = ann.post(f"/admin/chat/memoryitem/{own.pk}/delete/", {"post": "yes"})

    assert "ann likes tea" in listing and "ben likes coffee" not in listing
    assert foreign.status_code in (302, 404)
    assert deleted.status_code == 302
    assert list(MemoryItem.objects.values_list("user", flat=True)) == ["ben"]
