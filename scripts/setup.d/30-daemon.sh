#!/usr/bin/env bash
# Daemon tests: headless Chromium for the status-page screenshot test, and the example plugin
# package installed into .venv (tests/plugin_example, entry point group sluice.components).
# Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
if ! .venv/bin/python -c "import sluice_plugin_example" 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check -e tests/plugin_example
fi
