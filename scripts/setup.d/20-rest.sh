#!/usr/bin/env bash
# REST connector tests: json-server 0.17.4 (npm) into tests/servers/node_modules (git-ignored),
# pinned by tests/servers/package.json + package-lock.json. Datasette and Kinto come from the
# `test` extra in pyproject.toml (installed into .venv by scripts/test.sh). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
bin=tests/servers/node_modules/.bin/json-server
if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "0.17.4" ]; then
  exit 0
fi
(cd tests/servers && npm ci --no-audit --no-fund --loglevel=error)
"$bin" --version
