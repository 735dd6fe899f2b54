"""Fixtures of the plugin tests: a dummy package installed through an entry point,
the plugin folder of the tests, and a fresh chain for every test."""

from __future__ import annotations

from pathlib import Path

import pytest

FOLDER = Path(__file__).parent / "plugin_folder"

ENTRY_POINTS = """\
[openclaw.plugins]
dummy_tagger = tests.plugins.dummy_plugin:TaggerPlugin
dummy_raising = tests.plugins.dummy_plugin:RaisingPlugin
dummy_not_a_plugin = tests.plugins.dummy_plugin:NotAPlugin
dummy_missing = tests.plugins.dummy_plugin.gone:Missing
misnamed = tests.plugins.dummy_plugin:TaggerPlugin
sensitive_words = plugins.builtins.sensitive_words:SensitiveWordFilter
"""


@pytest.fixture
def installed_dummy(tmp_path, monkeypatch) -> Path:
    """The dummy package as pip would install it: a ``*.dist-info`` with its
    ``entry_points.txt`` in a folder on ``sys.path`` (importlib.metadata finds it)."""
    dist_info = tmp_path / "site" / "openclaw_dummy_plugin-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: openclaw-dummy-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(dist_info.parent))
    return dist_info


@pytest.fixture
def plugin_folder(settings) -> Path:
    settings.OPENCLAW_PLUGIN_DIRS = [str(FOLDER)]
    return FOLDER


@pytest.fixture
def audit_events(monkeypatch) -> list[tuple[str, dict]]:
    """Audit events recorded by the chain and the built-ins: (action, everything else)."""
    events: list[tuple[str, dict]] = []

    def record(action: str, **kwargs) -> None:
        events.append((action, kwargs))

    monkeypatch.setattr("plugins.base.audit_event", record)
    monkeypatch.setattr("plugins.chain.audit_event", record)
    return events
