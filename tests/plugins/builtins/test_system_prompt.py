"""System-prompt templates: rendered with the request's variables, prepended,
replacing, or only where the conversation has no system message."""

from __future__ import annotations

import datetime

from django.utils import timezone

from plugins.base import PluginRequest
from plugins.builtins.system_prompt import SystemPromptTemplate, render
from plugins.discovery import config_problems


def request(*messages: dict) -> PluginRequest:
    return PluginRequest(messages=list(messages), model="local-7b", user_name="alice",
                         conversation_id="c9")


USER = {"role": "user", "content": "hi"}
SYSTEM = {"role": "system", "content": "Be brief."}


def test_the_template_is_rendered_and_prepended():
    plugin = SystemPromptTemplate({"template": "Hello {user} ({model}, {conversation_id}), "
                                               "today is {date}. {{literal}}"})

    req = plugin.pre_process(request(SYSTEM, USER))

    today = timezone.localdate().isoformat()
    assert req.messages == [
        {"role": "system", "content": f"Hello alice (local-7b, c9), today is {today}. "
                                      "{literal}"},
        SYSTEM, USER]
    assert req.metadata["plugin_actions"][0]["action"] == "system_prompt"


def test_prepending_twice_adds_one_message():
    plugin = SystemPromptTemplate({"template": "Rules."})

    req = plugin.pre_process(plugin.pre_process(request(USER)))

    assert [m["content"] for m in req.messages] == ["Rules.", "hi"]


def test_replace_mode_drops_the_other_system_messages():
    plugin = SystemPromptTemplate({"template": "Only this.", "mode": "replace"})

    req = plugin.pre_process(request(SYSTEM, USER, SYSTEM))

    assert req.messages == [{"role": "system", "content": "Only this."}, USER]


def test_if_missing_mode_keeps_an_existing_system_message():
    plugin = SystemPromptTemplate({"template": "Default.", "mode": "if_missing"})

    assert plugin.pre_process(request(SYSTEM, USER)).messages == [SYSTEM, USER]
    assert plugin.pre_process(request(USER)).messages[0]["content"] == "Default."


def test_unknown_variables_are_refused_in_the_config():
    problems = config_problems(SystemPromptTemplate, {"template": "Hi {name} {user.__class__}"})

    [(path, message)] = problems
    assert path == "template"
    assert "Unknown variables: {name}, {user.__class__}" in message


def test_render_fills_every_variable(settings):
    values = SystemPromptTemplate.values(request())

    assert set(values) == {"user", "date", "time", "datetime", "weekday", "model",
                           "conversation_id"}
    assert datetime.date.fromisoformat(values["date"])
    assert render("{unknown} {model}", values) == "{unknown} local-7b"


def test_an_unknown_name_is_never_rendered_empty():
    plugin = SystemPromptTemplate({"template": "Talking with {user}."})

    anonymous = plugin.pre_process(PluginRequest(messages=[USER], model="m", user="42"))

    assert anonymous.messages[0]["content"] == "Talking with the user."
