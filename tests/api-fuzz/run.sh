#!/usr/bin/env bash
# Property-based API fuzzing with schemathesis against /api/openapi.json on a real server process
# (fresh data directory, real HTTP on loopback), once with an office token and once with a
# supervisor's. Checks: no 5xx, and every response is documented (status code, content type,
# body schema). Bounded: a fixed number of examples per operation and a fixed seed, so a run takes
# a couple of minutes and finds the same things twice.
#
# Then real answers of a demo agency (reports with rows, visits with events, alerts) are checked
# against the same document (conformance.py).
#
# Environment: API_FUZZ_EXAMPLES (default 100), API_FUZZ_SEED (default 11), API_FUZZ_VENV.
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
VENV=${API_FUZZ_VENV:-$PWD/target/api-fuzz-venv}
EXAMPLES=${API_FUZZ_EXAMPLES:-100}
SEED=${API_FUZZ_SEED:-11}

if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
if [ ! -x target/debug/caresync-server ]; then
  cargo build --workspace --bins
fi

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ -n "${demo_pid:-}" ]; then kill "$demo_pid" 2>/dev/null || true; wait "$demo_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

target/debug/caresync-server serve --listen 127.0.0.1:0 --data-dir "$work/data" \
  >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 1 100); do
  grep -q '^listening on ' "$work/server.out" 2>/dev/null && break
  sleep 0.1
done
base=$(sed -n 's/^listening on //p' "$work/server.out")
office=$(sed -n 's/^office token (shown once): //p' "$work/server.err")
if [ -z "$base" ] || [ -z "$office" ]; then
  echo "the server did not start:" >&2
  cat "$work/server.err" >&2
  exit 1
fi

# A team and a supervisor in it, through the API itself.
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
team=$(curl -sf -X POST "$base/api/v1/teams" -H "Authorization: Bearer $office" \
  -H 'Content-Type: application/json' -d '{"name":"North"}' | json "['id']")
supervisor=$(curl -sf -X POST "$base/api/v1/people" -H "Authorization: Bearer $office" \
  -H 'Content-Type: application/json' \
  -d "{\"name\":\"Sam Supervisor\",\"role\":\"supervisor\",\"team_id\":\"$team\"}" | json "['token']")

status=0
for who in office supervisor; do
  token=$office
  [ "$who" = supervisor ] && token=$supervisor
  echo "== schemathesis as $who: $EXAMPLES examples per operation, seed $SEED"
  # From the scratch directory: schemathesis keeps a .schemathesis/ folder where it runs.
  # The two CBOR operations (sync, enrol) have no serializer here; the fuzz targets cover them.
  (cd "$work" && "$VENV/bin/st" run "$base/api/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "$EXAMPLES" --seed "$SEED" --workers 1 \
    --phases examples,coverage,fuzzing \
    --generation-database none --no-color \
    --request-timeout 30 \
    --exclude-path /api/v1/sync --exclude-path /api/v1/enrol) \
    || status=1
done
# Real answers with data in them against the document: a demo agency, three days played.
demo_pid=
CARESYNC_DEMO_DAYS=3 target/debug/caresync-server serve --demo --listen 127.0.0.1:0 \
  --data-dir "$work/demo" >"$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!
for _ in $(seq 1 300); do
  grep -q 'the demo is playing' "$work/demo.out" 2>/dev/null && break
  sleep 0.1
done
sleep 10 # let the simulated phones sync some visits
# The demo prints its sign-in links again once it has played, which a fast machine reaches within
# the wait above: take the first.
demo_base=$(sed -n 's/^listening on //p' "$work/demo.out" | head -1)
demo_office=$(sed -n 's/.*Demo office *http.*token=//p' "$work/demo.out" | head -1)
echo "== OpenAPI conformance of a demo agency's answers"
"$VENV/bin/python" tests/api-fuzz/conformance.py "$demo_base" "$demo_office" | tail -3 || status=1
kill "$demo_pid" 2>/dev/null || true
wait "$demo_pid" 2>/dev/null || true
if grep -q ' ERROR ' "$work/server.err"; then
  echo "the server logged errors:" >&2
  grep ' ERROR ' "$work/server.err" | tail -20 >&2
fi
exit $status
