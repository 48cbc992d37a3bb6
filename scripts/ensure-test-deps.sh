#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain, only when missing (idempotent):
# PostgreSQL's server binaries, for the store conformance suite and the multi-instance journeys
# (they start a private cluster and fail, never skip, without them).
set -euo pipefail

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  echo "installing postgresql (server binaries for the tests)"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
fi

# Headless Chromium for the dashboard's browser tests (tests/browser), driven by Playwright's
# client library from npm against this system browser (no browser download).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "installing chromium and chromium-driver (browser tests)"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver
fi
