#!/usr/bin/env bash
# The bindings' tests: build the server and the phone library, generate the bindings, then live a
# carer's day from Python and from Kotlin against a real server process. Installs what is missing
# (Debian's libjna-java, the npm kotlin-compiler package) and exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

target="${CARGO_TARGET_DIR:-target}"
if [ ! -f /usr/share/java/jna.jar ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y libjna-java
fi
kotlinc="$target/kotlin/node_modules/kotlin-compiler/bin/kotlinc"
if [ ! -x "$kotlinc" ]; then
  mkdir -p "$target/kotlin"
  npm install --prefix "$target/kotlin" --no-audit --no-fund kotlin-compiler@2.4.20
fi

cargo build --workspace --bins
scripts/bindings.sh
export CARESYNC_SERVER="$PWD/$target/debug/caresync-server"

echo "== Python"
CARESYNC_BINDINGS="$PWD/$target/bindings/python" python3 tests/ffi/python/test_carer_day.py

echo "== Kotlin"
out="$target/kotlin/classes"
rm -rf "$out" && mkdir -p "$out"
"$kotlinc" -nowarn -cp /usr/share/java/jna.jar -d "$out" \
  "$target/bindings/kotlin/uniffi/caresync_ffi/caresync_ffi.kt" tests/ffi/kotlin/CarerDay.kt
java -Djna.library.path="$PWD/$target/debug" -cp "$out:/usr/share/java/jna.jar:$(dirname "$kotlinc")/../lib/kotlin-stdlib.jar" CarerDayKt
