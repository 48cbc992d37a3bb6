#!/usr/bin/env bash
# Every test caresync has: Rust unit and end-to-end tests (real server processes, real phone
# stores, a private PostgreSQL cluster), then the bindings' tests from Python and Kotlin.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-test-deps.sh
# Property tests draw their cases from one fixed seed here, so this run is reproducible: a
# submission is not failed by a case nobody has seen, and a failure here fails again the same way.
# Exploring is separate: unset it (each run then draws new cases) or give another seed, with
# PROPTEST_CASES to draw more; a shrunk failing case goes into the test's proptest-regressions file.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261125}"
# Style and lints first: a change that is not formatted or warns does not pass.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace
# Phones speak sync protocol 2 in the run above; a fleet mid-upgrade still has version 1 phones,
# so the sync journeys run once more speaking version 1 (docs/protocol.md). Every cargo command
# here selects the whole workspace, so features unify the same way and nothing is built twice.
# The binary the run above built is run again, not rebuilt: selecting one test target changes how
# cargo unifies dev-dependencies' features, which rebuilt serde, axum, core and server.
journeys=$(cargo test --workspace --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "sync_journeys" and m.get("executable"):
        print(m["executable"])')
(cd tests && CARESYNC_TEST_PROTOCOL=1 "$journeys")
if [ -x tests/ffi/run.sh ]; then
  tests/ffi/run.sh
fi
# The web dashboard in a real headless Chromium against `serve --demo` (a short demo).
tests/browser/run.sh
# Property-based API fuzzing (schemathesis) against a real server, then a short run of every fuzz
# target from its checked-in corpus (docs/security.md).
tests/api-fuzz/run.sh
scripts/fuzz-smoke.sh
