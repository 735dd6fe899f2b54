"""The openclaw command's own lines in the shell's language, before Django is set up:
the choice of language, and a refusal printed in 中文 by a real `openclaw up`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from openclaw_site.children import StartupError, gettext_noop
from openclaw_site.speech import said, shell_language

OPENCLAW = [sys.executable, "-m", "openclaw_site.cli"]


@pytest.mark.parametrize(("environ", "language"), [
    ({"LANG": "zh_CN.UTF-8"}, "zh_Hans"),
    ({"OPENCLAW_LANGUAGE": "zh-hans", "LANG": "en_US.UTF-8"}, "zh_Hans"),
    ({"LANGUAGE": "fr:zh_TW", "LANG": "C"}, "zh_Hans"),  # the first it has a catalogue for
    ({"LANGUAGE": "en", "LANG": "zh_CN.UTF-8"}, None),  # the first variable set decides
    ({"LANG": "C"}, None),
    ({}, None),
])
def test_the_shell_chooses_the_language(environ, language):
    assert shell_language(environ) == language


def test_a_startup_error_is_english_text_and_said_in_the_shells_language(monkeypatch):
    error = StartupError(gettext_noop("OPENCLAW_PORT=%(value)r is not a port number"),
                         value="abc")
    monkeypatch.setenv("OPENCLAW_LANGUAGE", "zh-hans")

    assert str(error) == "OPENCLAW_PORT='abc' is not a port number"
    assert said(error.message, error.params) == "OPENCLAW_PORT='abc' 不是端口号"


def test_up_refuses_a_bad_port_in_chinese(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "DJANGO_"))}
    env.update(OPENCLAW_PORT="abc", OPENCLAW_DATA_DIR=str(tmp_path), LANG="zh_CN.UTF-8")
    env.pop("LANGUAGE", None)
    env.pop("LC_ALL", None)

    refused = subprocess.run([*OPENCLAW, "up"], env=env, capture_output=True, text=True,
                             timeout=60)

    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == \
        "openclaw: error: OPENCLAW_PORT='abc' 不是端口号"
