#!/usr/bin/env bash
# File tests: Azurite 3.35.0 (npm; newer versions need Node 22) into tests/servers/azurite/node_modules
# (git-ignored), pinned by tests/servers/azurite/package.json + package-lock.json. moto[server],
# asyncssh and azure-storage-blob come from pyproject.toml. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
bin=tests/servers/azurite/node_modules/.bin/azurite-blob
if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "3.35.0" ]; then
  exit 0
fi
(cd tests/servers/azurite && npm ci --no-audit --no-fund --loglevel=error)
"$bin" --version
