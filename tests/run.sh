#!/usr/bin/env bash
# The one test command (README, .ci/run): install what the tests need, lint, check the
# layers and the types, run pytest with coverage.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev,local]'

# Debian packages the suite needs, installed when missing (CI runs as root).
need=()
for pkg in $(cat tests/debian-packages.txt 2>/dev/null | grep -v '^#' || true); do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

# The zh-hans catalogues (.mo files are built, never committed); msgfmt checks formats.
env -u DJANGO_SETTINGS_MODULE .venv/bin/python -m django compilemessages --verbosity 0 \
    --ignore '.venv*' --ignore node_modules --ignore tests

.venv/bin/ruff check .

# The layers (docs/architecture.md): import-linter's contract, then every import at any
# depth (cycles, upward or deferred imports); then the types.
.venv/bin/lint-imports --no-cache
.venv/bin/python tests/scan_imports.py
.venv/bin/mypy

# The whole suite measures coverage against the floor of pyproject.toml
# ([tool.coverage.report] fail_under); a run of some tests (arguments given) does not.
coverage=()
if [ $# -eq 0 ]; then
    coverage=(--cov --cov-report=term:skip-covered)
fi
status=0
.venv/bin/python -m pytest "${coverage[@]}" "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "tests/run.sh: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$status"
