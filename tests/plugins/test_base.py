"""The base module: audit events reach the audit trail and never fail a request;
message text helpers handle string and multi-part content."""

from __future__ import annotations

from plugins.base import audit_event, map_message_text, message_texts


def test_audit_events_go_to_the_audit_trail(monkeypatch):
    calls = []
    monkeypatch.setattr("core.audit.audit",
                        lambda action, **kwargs: calls.append((action, kwargs)))

    audit_event("plugin.block", actor="alice", target="sensitive_words", detail={"n": 1})

    assert calls == [("plugin.block", {"actor": "alice", "target": "sensitive_words",
                                       "detail": {"n": 1}})]


def test_a_failing_audit_trail_does_not_fail_the_request(monkeypatch, caplog):
    def broken(action, **kwargs):
        raise RuntimeError("broker down")

    monkeypatch.setattr("core.audit.audit", broken)

    audit_event("plugin.block", target="sensitive_words")

    assert "could not record audit event plugin.block" in caplog.text


def test_message_text_helpers_handle_strings_and_parts():
    message = {"role": "user", "content": [{"type": "text", "text": "a"},
                                           {"type": "image_url", "image_url": {"url": "x"}},
                                           {"type": "text", "text": "b"}]}

    map_message_text(message, str.upper)

    assert message_texts(message) == ["A", "B"]
    assert message_texts({"role": "user", "content": "plain"}) == ["plain"]
    assert message_texts({"role": "assistant", "content": None}) == []
