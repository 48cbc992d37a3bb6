#!/usr/bin/env bash
# A short run of every fuzz target (fuzz/, cargo-fuzz with libFuzzer) from the checked-in corpus:
# about 20 s each, about a minute in all, after a one-off build of the targets. Fails if any
# target crashes; the crashing input is left in fuzz/artifacts/<target>/.
#
# libFuzzer needs rustc's unstable sanitizer-coverage hooks, which the stable toolchain allows
# with RUSTC_BOOTSTRAP=1; `-s none` (no AddressSanitizer: the code under test is safe Rust)
# keeps executions fast. Long runs: docs/security.md, "Fuzzing".
#
# Environment: FUZZ_SECONDS (per target, default 20).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_EACH=${FUZZ_SECONDS:-20}
TARGETS=(sync_request sync_response commit_path)
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
cargo fuzz build -s none -O

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in "${TARGETS[@]}"; do
  echo "== fuzz $target for ${SECONDS_EACH}s"
  mkdir -p "$work/$target"
  # New inputs go to the scratch directory; the checked-in corpus is only read.
  if ! cargo fuzz run -s none -O "$target" "$work/$target" "corpus/$target" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$work/$target.log" 2>&1; then
    tail -40 "$work/$target.log" >&2
    echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E 'INITED|DONE|stat::number_of_executed_units|stat::average_exec_per_sec' "$work/$target.log" || true
done
echo "fuzz smoke: ${#TARGETS[@]} targets ran without a crash"
