#!/usr/bin/env bash
# Install everything the test suite needs into .venv (and system packages via scripts/setup.d),
# then lint (ruff, mypy) and run the tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
for hook in scripts/setup.d/*.sh; do
  [ -e "$hook" ] || continue
  echo "== setup: $hook"
  bash "$hook"
done
echo "== lint: ruff, mypy"
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
