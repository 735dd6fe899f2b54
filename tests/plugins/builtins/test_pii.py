"""PII redaction: what it finds (and what it leaves), redaction, the hybrid-mode flag
that routes a request to local models, and redaction of streamed answers."""

from __future__ import annotations

import pytest

from plugins.base import PluginRequest, PluginResponse
from plugins.builtins.pii import KINDS, SENSITIVE_DATA_FLAG, PiiRedaction, find_pii
from plugins.discovery import config_problems


def request(*texts: str) -> PluginRequest:
    return PluginRequest(messages=[{"role": "user", "content": t} for t in texts],
                         model="echo", user="alice")


@pytest.mark.parametrize(("text", "kind"), [
    ("mail jane.doe+x@example.co.uk now", "email"),
    ("call +1 415-555-2671 today", "phone"),
    ("call (020) 7946 0958", "phone"),
    ("手机 13812345678", "phone"),
    ("card 4111 1111 1111 1111 exp", "card"),
    ("card 5500-0000-0000-0004", "card"),
    ("ssn 123-45-6789", "national_id"),
    ("身份证 11010519491231002X", "national_id"),
    ("NI AB 12 34 56 C", "national_id"),
    ("iban GB82 WEST 1234 5698 7654 32", "iban"),
    ("from 192.168.10.1", "ip_address"),
])
def test_each_kind_is_found(text, kind):
    [span] = find_pii(text, KINDS)

    assert span.kind == kind


@pytest.mark.parametrize("text", [
    "meet on 2024-01-15 at 10:30",
    "it costs 1999 dollars",
    "card 4111 1111 1111 1112",  # fails the Luhn check
    "ssn 666-45-6789",
    "id 110105194912310021",  # wrong check digit
    "version 1.2.3",
    "order #12345",
])
def test_lookalikes_are_left_alone(text):
    assert find_pii(text, KINDS) == []


def test_pii_is_redacted_in_requests(audit_events):
    plugin = PiiRedaction({})
    req = request("I am jane@example.com, card 4111111111111111")
    req.messages.insert(0, {"role": "system", "content": "support: help@example.com"})

    req = plugin.pre_process(req)

    assert req.messages[1]["content"] == "I am [EMAIL], card [CARD]"
    assert req.messages[0]["content"] == "support: help@example.com"  # the operator's
    assert SENSITIVE_DATA_FLAG not in req.flags
    assert req.metadata["plugin_actions"] == [
        {"plugin": "pii_redaction", "action": "redact",
         "detail": {"kinds": {"card": 1, "email": 1}}}]
    assert audit_events[0][0] == "plugin.redact"


def test_hybrid_mode_flags_a_request_with_pii_for_local_models(audit_events):
    plugin = PiiRedaction({"hybrid_mode": True, "redact": False})

    req = plugin.pre_process(request("my phone is +44 20 7946 0958"))

    assert req.flags == {SENSITIVE_DATA_FLAG}
    assert req.messages[0]["content"] == "my phone is +44 20 7946 0958"  # stays on-premises
    assert req.metadata["plugin_actions"][0]["action"] == "flag"
    assert audit_events[0][0] == "plugin.flag"


def test_hybrid_mode_can_redact_as_well():
    plugin = PiiRedaction({"hybrid_mode": True, "redact": True})

    req = plugin.pre_process(request("ssn 123-45-6789"))

    assert req.flags == {SENSITIVE_DATA_FLAG}
    assert req.messages[0]["content"] == "ssn [NATIONAL_ID]"


def test_a_request_without_pii_is_not_flagged():
    plugin = PiiRedaction({"hybrid_mode": True})

    req = plugin.pre_process(request("what is 2 + 2 on 2024-01-15?"))

    assert req.flags == set() and "plugin_actions" not in req.metadata


def test_answers_are_redacted_only_when_asked():
    off = PiiRedaction({})
    on = PiiRedaction({"redact_output": True, "placeholder": "<{kind}>"})
    answer = "write to bob@example.org"

    assert off.post_process(PluginResponse(answer, "m", request())).content \
        == answer
    assert on.post_process(PluginResponse(answer, "m", request())).content == \
        "write to <EMAIL>"


def test_streamed_answers_are_redacted_across_deltas():
    plugin = PiiRedaction({"redact_output": True})
    state: dict = {"request": request(), "metadata": {}}
    deltas = ["Sure! Write to jane.", "doe@exam", "ple.com or call +1 415", "-555-2671. ",
              "Anything else? " * 6]

    out = [plugin.stream_delta(d, state) for d in deltas] + [plugin.stream_flush(state)]

    text = "".join(out)
    assert text == "Sure! Write to [EMAIL] or call [PHONE]. " + "Anything else? " * 6
    assert not any("jane" in piece or "555" in piece for piece in out)
    assert state["metadata"]["plugin_actions"][0]["detail"]["kinds"] == {"email": 1,
                                                                         "phone": 1}


def test_a_configuration_that_does_nothing_is_refused():
    problems = config_problems(PiiRedaction, {"redact": False})

    assert problems[0][0] == "redact"
    assert config_problems(PiiRedaction, {"kinds": ["dna"]})[0][0] == "kinds[0]"
