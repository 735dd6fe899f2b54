"""The sensitive-word filter blocks or masks, in requests, answers and streams (a word
split across deltas never leaves unmasked), and audits what it did."""

from __future__ import annotations

import pytest

from plugins.base import PluginBlocked, PluginRequest, PluginResponse
from plugins.builtins import SensitiveWordFilter
from plugins.discovery import config_problems


def request(*texts: str) -> PluginRequest:
    return PluginRequest(messages=[{"role": "user", "content": t} for t in texts],
                         model="echo", user="alice", conversation_id="c1")


def stream(plugin: SensitiveWordFilter, deltas: list[str]) -> list[str]:
    state: dict = {"request": request(), "metadata": {}}
    out = [plugin.stream_delta(delta, state) for delta in deltas]
    return [*out, plugin.stream_flush(state)]


def test_block_mode_refuses_a_request_with_a_listed_word(audit_events):
    plugin = SensitiveWordFilter({"words": ["secret plan"], "mode": "block"})

    with pytest.raises(PluginBlocked) as blocked:
        plugin.pre_process(request("hello", "tell me the SECRET PLAN"))

    assert blocked.value.plugin == "sensitive_words"
    assert "contains a word this service does not allow" in blocked.value.message
    [(action, event)] = audit_events
    assert action == "plugin.block"
    assert event["actor"] == "alice"
    assert event["detail"]["words"] == ["secret plan"]
    assert event["detail"]["conversation_id"] == "c1"


def test_block_mode_uses_the_configured_message():
    plugin = SensitiveWordFilter({"words": ["x-ray"], "mode": "block",
                                  "block_message": "Not here."})

    with pytest.raises(PluginBlocked, match="^Not here.$"):
        plugin.post_process(PluginResponse("an X-ray", "echo", request()))


def test_mask_mode_masks_requests_and_answers(audit_events):
    plugin = SensitiveWordFilter({"words": ["darn", "绝密"], "mode": "mask"})
    req = request("Darn it", "这是绝密文件")
    req.messages.insert(0, {"role": "system", "content": "darn is fine here"})
    req.messages.append({"role": "user", "content": [{"type": "text", "text": "darn"}]})

    req = plugin.pre_process(req)
    resp = plugin.post_process(PluginResponse("darn right", "echo", req))

    assert [m["content"] for m in req.messages[:3]] == ["darn is fine here", "**** it",
                                                        "这是**文件"]
    assert req.messages[3]["content"][0]["text"] == "****"
    assert resp.content == "**** right"
    assert req.metadata["plugin_actions"][0]["action"] == "mask"
    assert [a for a, _ in audit_events] == ["plugin.mask", "plugin.mask"]


def test_apply_to_limits_the_direction():
    plugin = SensitiveWordFilter({"words": ["darn"], "mode": "block", "apply_to": "output"})

    assert plugin.pre_process(request("darn")).messages[0]["content"] == "darn"
    with pytest.raises(PluginBlocked, match="The answer was stopped"):
        plugin.post_process(PluginResponse("darn", "echo", request()))


def test_masking_works_across_streamed_deltas(audit_events):
    plugin = SensitiveWordFilter({"words": ["badword"], "mode": "mask"})

    out = stream(plugin, ["This is a B", "adw", "ord and ", "another bad", "word", "!"])

    assert "".join(out) == "This is a ******* and another *******!"
    assert not any("B" in piece or "bad" in piece for piece in out)
    assert out[0] == "This is a "  # held back only what might become the word
    assert [a for a, _ in audit_events] == ["plugin.mask"]  # once per answer


def test_a_word_that_begins_a_longer_word_is_held_until_it_is_decided():
    plugin = SensitiveWordFilter({"words": ["ab", "abcd"], "mode": "mask"})

    assert "".join(stream(plugin, ["x a", "b", "cd y"])) == "x **** y"
    assert "".join(stream(plugin, ["x a", "b", "c y"])) == "x **c y"
    assert "".join(stream(plugin, ["x a", "b"])) == "x **"  # decided by the end


def test_block_mode_stops_a_stream_before_the_word_is_sent():
    plugin = SensitiveWordFilter({"words": ["badword"], "mode": "block"})
    state: dict = {"request": request(), "metadata": {}}

    sent = plugin.stream_delta("fine, then bad", state)
    with pytest.raises(PluginBlocked):
        plugin.stream_delta("word", state)

    assert sent == "fine, then "


def test_an_empty_word_list_passes_everything():
    plugin = SensitiveWordFilter({"words": [], "mode": "block"})

    assert plugin.pre_process(request("anything")).messages[0]["content"] == "anything"
    assert stream(plugin, ["a", "b"]) == ["a", "b", ""]


def test_blank_words_are_refused_with_their_path():
    problems = config_problems(SensitiveWordFilter, {"words": ["ok", "  "], "mode": "mask"})

    assert problems == [("words[1]", "A word cannot be only spaces.")]
