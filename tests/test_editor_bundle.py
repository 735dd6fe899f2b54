"""The workflow editor's committed bundle (chat/static/studio/dist/) is what its source
(editor/) builds: ``npm ci`` from the lock file, then ``node editor/build.mjs --check``
— and the check does fail when the source changes without a rebuild."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EDITOR = REPO / "editor"


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed() -> Path:
    """editor/node_modules installed exactly as package-lock.json says."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.fail("Node.js is missing: tests/run.sh installs Debian's `nodejs` and `npm`")
    done = run("npm", "ci", "--no-audit", "--no-fund", cwd=EDITOR)
    assert done.returncode == 0, done.stdout + done.stderr
    return EDITOR / "node_modules"


def test_the_committed_bundle_is_what_the_source_builds(installed):
    checked = run("node", "build.mjs", "--check", cwd=EDITOR)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "matches its source" in checked.stdout


def test_a_source_change_without_a_rebuild_fails_the_check(installed, tmp_path):
    # given: a copy of the repository's editor/ and bundle, one source file changed
    copy = tmp_path / "repo"
    shutil.copytree(EDITOR, copy / "editor", ignore=shutil.ignore_patterns("node_modules"))
    (copy / "editor" / "node_modules").symlink_to(installed, target_is_directory=True)
    shutil.copytree(REPO / "chat" / "static" / "studio" / "dist",
                    copy / "chat" / "static" / "studio" / "dist")
    with open(copy / "editor" / "src" / "graph.js", "a", encoding="utf-8") as source:
        source.write('\nexport const CHANGED = "not in the committed bundle";\n'
                     'console.log(CHANGED);\n')
    # when
    checked = run("node", "build.mjs", "--check", cwd=copy / "editor")
    # then
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "chat/static/studio/dist/editor.js" in checked.stderr
    assert "run: cd editor && npm ci && node build.mjs" in checked.stderr
