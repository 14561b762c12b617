#!/usr/bin/env bash
# The README's test command (and CI's): the engine's tests, then the Python package built in
# a virtualenv and its tests, then the page in headless chromium (tools/web.sh test). Python
# tests that compare with pytorch-grad-cam live run only where torch and grad-cam are
# importable; the fixture tests need neither.
#   PYTHON=python3.11   the interpreter to build the virtualenv from
#   VENV=.venv          where the virtualenv goes
#   SKIP_CARGO_TESTS=1  no cargo tests (the Python package and the browser test)
#   SKIP_WEB_TESTS=1    no browser test
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${SKIP_CARGO_TESTS:-}" ]; then
    cargo test --release
fi

python="${PYTHON:-python3}"
venv="${VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" 2>/dev/null || {
        # Debian's python3 without python3-venv: virtualenv from PyPI instead.
        "$python" -m pip install --quiet --user virtualenv
        "$python" -m virtualenv --quiet "$venv"
    }
fi
venv="$(cd "$venv" && pwd)"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "maturin>=1.7,<2" pytest numpy
# The README's install command; it builds into the workspace's target/ (release, shared with
# `cargo test --release` above), so only the bindings compile here.
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps ./python
(cd python/tests && "$venv/bin/python" -m pytest -q -ra)

# The page and its wasm package in headless chromium, against the native CLI.
if [ -z "${SKIP_WEB_TESTS:-}" ]; then
    tools/web.sh test
fi
