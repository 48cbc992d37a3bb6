#!/usr/bin/env bash
# The WAL frames a clock event writes, by b-tree, under the load generator (docs/performance.md,
# "Seventh round"). Build first: cargo build --release -p caresync-server --bins
# usage: [CARESYNC_BIN=dir] scripts/wal-frames.sh [snapshots (default 4)]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARESYNC_BIN:-target/release}
out=$(mktemp -d)
snapshots=${1:-4}
mkdir -p "$out/run"
TMPDIR=$out/run "$bin/caresync-loadgen" --phones 500 --visits 30 --seconds 20 --threads 32 \
  --mode delta --protocol 2 > "$out/loadgen.log" 2>&1 &
until grep -q "running for" "$out/loadgen.log" 2>/dev/null; do sleep 0.3; done
sleep 4
db=$(find "$out/run" -name caresync.db | head -1)
dbs=()
for i in $(seq "$snapshots"); do
  # A WAL of more than about 850 frames: most of a generation (SQLite checkpoints at 1,000).
  while [ "$(stat -c %s "$db-wal")" -lt 3500000 ]; do sleep 0.05; done
  cp "$db" "$out/snap$i.db"
  cp "$db-wal" "$out/snap$i.db-wal"
  dbs+=("$out/snap$i.db")
  sleep 2.5
done
wait
grep -E "per clock event [0-9]" "$out/loadgen.log"
writes=$(grep -oE '[0-9.]+ writes per commit' "$out/loadgen.log" | cut -d' ' -f1)
python3 scripts/wal-frames.py "$writes" "${dbs[@]}"
rm -rf "$out"
