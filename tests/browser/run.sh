#!/usr/bin/env bash
# The dashboard in a real headless Chromium: starts `caresync-server serve --demo` (a short demo,
# CARESYNC_DEMO_DAYS, default 3) on a free loopback port with a fresh data directory, runs
# dashboard.test.mjs against it as a supervisor and as the office, and stops the server.
# Screenshots and the downloaded CSV go to $SCREENSHOTS (default target/browser-screenshots).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
server="${CARESYNC_SERVER:-$root/target/debug/caresync-server}"
shots="${SCREENSHOTS:-$root/target/browser-screenshots}"
[ -x "$server" ] || { echo "build the server first: cargo build --workspace --bins" >&2; exit 1; }
command -v chromium >/dev/null || { echo "chromium missing: run scripts/ensure-test-deps.sh" >&2; exit 1; }

cd "$here"
if [ ! -d node_modules/playwright-core ]; then
  npm install --no-audit --no-fund --loglevel=error
fi

work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

CARESYNC_DEMO_DAYS="${CARESYNC_DEMO_DAYS:-3}" CARESYNC_LOG=warn \
  "$server" serve --listen 127.0.0.1:0 --data-dir "$work/data" --demo >"$work/out.log" 2>"$work/err.log" &
pid=$!

# The demo prints its sign-in links once it has played; a debug build takes a while.
for _ in $(seq 1 900); do
  if grep -q "^office token:" "$work/out.log" 2>/dev/null; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then cat "$work/out.log" "$work/err.log" >&2; echo "server exited" >&2; exit 1; fi
  if grep -q "^demo failed" "$work/err.log" 2>/dev/null; then cat "$work/err.log" >&2; exit 1; fi
  sleep 1
done
grep -q "^office token:" "$work/out.log" || { cat "$work/out.log" >&2; echo "demo did not finish" >&2; exit 1; }
cat "$work/out.log"

url="$(sed -n 's/^Dashboard: \(http[^ ]*\)\/$/\1/p' "$work/out.log" | head -1)"
office="$(sed -n 's/^office token: //p' "$work/out.log" | head -1)"
# The first supervisor line: "Supervisor, North team token: ...".
sup_line="$(grep -m1 '^Supervisor, .* token: ' "$work/out.log")"
supervisor="${sup_line##*token: }"
team="$(echo "$sup_line" | sed -n 's/^Supervisor, \(.*\) token: .*/\1/p')"

DASHBOARD_URL="$url" OFFICE_TOKEN="$office" SUPERVISOR_TOKEN="$supervisor" SUPERVISOR_TEAM="$team" \
  SCREENSHOTS="$shots" node dashboard.test.mjs
echo "screenshots in $shots"
