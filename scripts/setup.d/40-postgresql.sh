#!/usr/bin/env bash
# PostgreSQL server binaries for the state-store tests (tests/pg.py starts a temporary server with
# initdb/pg_ctl as the `postgres` user; nothing runs as a system service). The Python driver,
# asyncpg, is a dependency in pyproject.toml. Idempotent: nothing to do when initdb is installed.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
# the Debian package starts a cluster as a service; the tests use their own server
command -v pg_ctlcluster >/dev/null 2>&1 && pg_ctlcluster --force "$(ls /usr/lib/postgresql | sort -V | tail -1)" main stop 2>/dev/null || true
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
