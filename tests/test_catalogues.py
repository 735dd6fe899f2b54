"""The Simplified Chinese catalogues are complete: every string is translated (none
fuzzy), and ``makemessages`` run over the code today finds no string missing from
them, so a new user-facing string cannot slip in untranslated."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings

REPO = Path(__file__).resolve().parent.parent
CATALOGUES = REPO / "locale" / "zh_Hans" / "LC_MESSAGES"
DOMAINS = ["django", "djangojs"]
# What makemessages never reads (chat/management/commands/makemessages.py skips the
# same); the copy leaves them out so it stays small.
NOT_COPIED = shutil.ignore_patterns(".git", ".venv*", "node_modules", "tests", "__pycache__",
                                    "*.egg-info", ".pytest_cache", ".ruff_cache", "*.mo",
                                    "results", "htmlcov")


def statistics(po: Path) -> str:
    done = subprocess.run(["msgfmt", "--check", "--statistics", "-o", "/dev/null", str(po)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stderr.strip().splitlines()[-1]


def untranslated(po: Path) -> str:
    """The entries of ``po`` that are untranslated or fuzzy, as msgattrib prints them."""
    done = subprocess.run(["msgattrib", "--only-fuzzy", "--no-obsolete", str(po)],
                          capture_output=True, text=True, check=True)
    fuzzy = done.stdout
    done = subprocess.run(["msgattrib", "--untranslated", "--no-obsolete", str(po)],
                          capture_output=True, text=True, check=True)
    return "\n".join(part for part in (fuzzy, done.stdout) if part.strip())


@pytest.mark.parametrize("domain", DOMAINS)
def test_catalogue_has_nothing_untranslated_or_fuzzy(domain):
    line = statistics(CATALOGUES / f"{domain}.po")

    assert re.fullmatch(r"\d+ translated messages?\.", line), line


@pytest.mark.parametrize("domain", DOMAINS)
def test_makemessages_finds_no_string_missing_from_the_catalogue(domain, tmp_path,
                                                                 monkeypatch):
    # given: a copy of the code and of the committed catalogue
    copy = tmp_path / "repo"
    shutil.copytree(REPO, copy, ignore=NOT_COPIED)
    monkeypatch.chdir(copy)

    # when: the strings of today's code are merged into the copy
    with override_settings(LOCALE_PATHS=[copy / "locale"]):
        call_command("makemessages", locale=["zh_Hans"], domain=domain, verbosity=0)

    # then: none of them is new (untranslated) or changed (fuzzy)
    merged = copy / "locale" / "zh_Hans" / "LC_MESSAGES" / f"{domain}.po"
    assert re.fullmatch(r"\d+ translated messages?\.", statistics(merged)), (
        f"strings missing from locale/zh_Hans/LC_MESSAGES/{domain}.po; run "
        f"`openclaw makemessages -l zh_Hans -d {domain}` and translate them:\n"
        + untranslated(merged))
