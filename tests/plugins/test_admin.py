"""Plugins in the admin: config problems named by their path, an unknown plugin
refused on its field, each row's state, and the plugins that could not be loaded."""

from __future__ import annotations

import json

import pytest
from django.contrib.messages import get_messages

from plugins.models import Plugin

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/plugins/plugin/add/"
LIST_URL = "/admin/plugins/plugin/"
RELOAD_URL = "/admin/plugins/plugin/reload/"


def form_data(**overrides) -> dict:
    data = {"name": "sensitive_words", "description_en": "", "description_zh_hans": "",
            "enabled": "on", "order": "10", "config": "{}"}
    data.update(overrides)
    return data


def test_a_bad_config_is_refused_with_an_error_on_the_config_field(admin_client):
    config = json.dumps({"words": ["fine", 42], "mode": "loud"})

    response = admin_client.post(ADD_URL, form_data(config=config))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["config"] == ["mode: Must be one of: “block”, “mask”.",
                                "words[1]: Must be of type string (got 42)."]
    assert not Plugin.objects.exists()


def test_a_missing_required_key_is_named(admin_client):
    response = admin_client.post(ADD_URL, form_data(name="system_prompt",
                                                    config='{"template": ""}'))

    errors = response.context["adminform"].form.errors
    assert errors["config"] == ["template: Must be at least 1 characters long."]


def test_an_unknown_plugin_is_refused_on_the_name_field(admin_client):
    response = admin_client.post(ADD_URL, form_data(name="nope"))

    errors = response.context["adminform"].form.errors
    assert "no plugin is named “nope”" in errors["name"][0]
    assert "sensitive_words" in errors["name"][0]  # the names that exist


def test_a_good_config_saves(admin_client):
    config = json.dumps({"words": ["darn"], "mode": "block"})

    response = admin_client.post(ADD_URL, form_data(config=config))

    assert response.status_code == 302
    assert Plugin.objects.get().config == {"words": ["darn"], "mode": "block"}


def test_the_change_page_shows_the_schema_and_defaults(admin_client):
    row = Plugin.objects.create(name="pii_redaction")

    page = admin_client.get(f"{LIST_URL}{row.pk}/change/").content.decode()

    assert "hybrid_mode" in page and "Configuration schema" in page


def test_broken_plugins_are_reported_on_the_list(admin_client, plugin_folder,
                                                 installed_dummy):
    Plugin.objects.create(name="folder_bad_defaults", order=1)
    Plugin.objects.create(name="dummy_tagger", order=2, config={"tag": "ok"})

    response = admin_client.get(LIST_URL)

    page = response.content.decode()
    notes = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("broken_import" in n and "openclaw_tests_no_such_module" in n for n in notes)
    assert any("dummy_missing" in n for n in notes)
    assert any("Available, not in the chain yet" in n and "folder_shout" in n for n in notes)
    assert "defaults do not fit its schema" in page  # the row's state column
    assert "✔" in page  # the dummy_tagger row is fine


def test_reload_bumps_the_chain_version(admin_client, django_capture_on_commit_callbacks):
    from plugins.chain import current_version

    before = current_version()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(RELOAD_URL)

    assert response.status_code == 302
    assert current_version() != before
    assert admin_client.get(RELOAD_URL).status_code == 403


def test_disable_and_enable_actions(admin_client, django_capture_on_commit_callbacks):
    from plugins.chain import current_version

    row = Plugin.objects.create(name="pii_redaction")
    before = current_version()

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(LIST_URL, {"action": "disable", "_selected_action": [row.pk]})

    row.refresh_from_db()
    assert not row.enabled
    assert current_version() != before  # every process's chain follows
    admin_client.post(LIST_URL, {"action": "enable", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.enabled
