#!/usr/bin/env bash
# Daemon: Graphviz's dot (lays out and draws the status page's flow graph; the daemon needs it at
# run time too), headless Chromium for the status-page tests, and the example plugin package
# installed into .venv (tests/plugin_example, entry point group sluice.components).
# Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/dot ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core graphviz >/dev/null
fi
if ! .venv/bin/python -c "import sluice_plugin_example" 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check -e tests/plugin_example
fi
