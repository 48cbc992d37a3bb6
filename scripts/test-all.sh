#!/usr/bin/env bash
# Every test caresync has: Rust unit and end-to-end tests (real server processes, real phone
# stores, a private PostgreSQL cluster), then the bindings' tests from Python and Kotlin.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-test-deps.sh
cargo build --workspace --bins
cargo test --workspace
if [ -x tests/ffi/run.sh ]; then
  tests/ffi/run.sh
fi
# The web dashboard in a real headless Chromium against `serve --demo` (a short demo).
tests/browser/run.sh
