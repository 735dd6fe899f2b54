"""Discovery: built-ins, entry points (real importlib.metadata) and the plugin folder,
each class validated; a broken plugin is a problem, never an exception."""

from __future__ import annotations

import pytest

from plugins.base import PluginBase
from plugins.discovery import class_problems, config_problems, discover, resolve


def problems_of(found, name: str) -> list[str]:
    return [p.message for p in found.problems if p.name == name]


def test_builtins_are_found_without_installing_anything():
    found = discover()

    assert {"sensitive_words", "pii_redaction", "system_prompt"} <= set(found.plugins)
    assert found.problems == []


def test_dummy_package_is_found_through_its_entry_point(installed_dummy):
    # when
    found = discover()

    # then
    from tests.plugins.dummy_plugin import RaisingPlugin, TaggerPlugin

    assert found.plugins["dummy_tagger"] is TaggerPlugin
    assert found.plugins["dummy_raising"] is RaisingPlugin
    assert "openclaw-dummy-plugin" in found.sources["dummy_tagger"]
    # a built-in declared as an entry point too (an installed OpenClaw) is no duplicate
    assert not problems_of(found, "sensitive_words")


def test_broken_entry_points_are_problems_and_the_rest_still_load(installed_dummy):
    found = discover()

    assert "ModuleNotFoundError" in problems_of(found, "dummy_missing")[0]
    assert "not a subclass" in problems_of(found, "dummy_not_a_plugin")[0]
    assert "calls itself “dummy_tagger”" in problems_of(found, "misnamed")[0]
    assert "misnamed" not in found.plugins
    assert "dummy_tagger" in found.plugins and "sensitive_words" in found.plugins


def test_plugins_are_found_in_the_plugin_folder(plugin_folder):
    found = discover()

    assert found.plugins["folder_shout"].__name__ == "ShoutPlugin"
    # a package, with a relative import of its own
    assert found.plugins["folder_signature"].__name__ == "SignaturePlugin"
    assert str(plugin_folder / "shout.py") in found.sources["folder_shout"]


def test_broken_folder_plugins_are_problems_and_skipped(plugin_folder):
    found = discover()

    [import_error] = problems_of(found, "broken_import")
    assert "openclaw_tests_no_such_module" in import_error
    [defaults] = problems_of(found, "folder_bad_defaults")
    assert "defaults do not fit its schema: limit" in defaults
    assert "folder_bad_defaults" not in found.plugins
    assert not problems_of(found, "notes")  # not a .py file: not looked at


def test_a_second_plugin_with_a_taken_name_is_a_problem(plugin_folder, tmp_path, settings):
    (tmp_path / "impostor.py").write_text(
        "from plugins.base import PluginBase\n\n\n"
        "class Impostor(PluginBase):\n    name = 'folder_shout'\n    version = '9'\n")
    settings.OPENCLAW_PLUGIN_DIRS = [str(plugin_folder), str(tmp_path)]

    found = discover()

    assert found.plugins["folder_shout"].__name__ == "ShoutPlugin"  # the first one stays
    assert "another plugin already has this name" in problems_of(found, "folder_shout")[0]


def test_a_changed_folder_plugin_is_imported_again(tmp_path, settings):
    settings.OPENCLAW_PLUGIN_DIRS = [str(tmp_path)]
    source = "from plugins.base import PluginBase\n\n\nclass P(PluginBase):\n" \
             "    name = 'changing'\n    version = '{}'\n"
    plugin = tmp_path / "changing.py"
    plugin.write_text(source.format("1"))
    assert discover().plugins["changing"].version == "1"

    plugin.write_text(source.format("2"))
    stat = plugin.stat()
    import os
    os.utime(plugin, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    assert discover().plugins["changing"].version == "2"


def test_a_missing_plugin_folder_is_skipped_quietly(settings, tmp_path):
    settings.OPENCLAW_PLUGIN_DIRS = [str(tmp_path / "nowhere")]

    assert discover().problems == []


@pytest.mark.parametrize(("attrs", "expected"), [
    ({"version": "1"}, "has no name"),
    ({"name": "x"}, "has no version"),
    ({"name": "x", "version": "1", "config_schema": {"type": "nonsense"}},
     "not a valid JSON schema"),
    ({"name": "x", "version": "1", "config_schema": {"type": "array"}},
     "must describe an object"),
])
def test_classes_are_validated(attrs, expected):
    cls = type("Candidate", (PluginBase,), attrs)

    assert any(expected in problem for problem in class_problems(cls))


def test_a_dotted_path_resolves_to_a_plugin_class(installed_dummy):
    from tests.plugins.dummy_plugin import TaggerPlugin

    found = discover()

    assert resolve("tests.plugins.dummy_plugin.TaggerPlugin", found) is TaggerPlugin
    with pytest.raises(LookupError, match="not a subclass"):
        resolve("tests.plugins.dummy_plugin.NotAPlugin", found)
    with pytest.raises(LookupError, match="no plugin is named “nope”"):
        resolve("nope", found)


def test_config_problems_name_the_path_of_each_problem():
    from plugins.builtins import SensitiveWordFilter

    problems = config_problems(SensitiveWordFilter,
                               {"words": ["ok", 3], "mode": "shout", "colour": "red"})

    assert problems == [
        ("", "Unknown keys: colour."),
        ("mode", "Must be one of: “block”, “mask”."),
        ("words[1]", "Must be of type string (got 3)."),
    ]
