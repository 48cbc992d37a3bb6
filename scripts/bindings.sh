#!/usr/bin/env bash
# Build the phone library and generate its Kotlin, Swift and Python bindings into
# target/bindings/{kotlin,swift,python} (the library itself is copied next to the Python module).
set -euo pipefail
cd "$(dirname "$0")/.."

profile_dir="${CARGO_TARGET_DIR:-target}/debug"
cargo build --workspace --lib --bins
lib="$profile_dir/libcaresync_ffi.so"
out="${CARGO_TARGET_DIR:-target}/bindings"
for language in kotlin swift python; do
  rm -rf "$out/$language"
  "$profile_dir/uniffi-bindgen" generate "$lib" --language "$language" --out-dir "$out/$language" --no-format
done
cp "$lib" "$out/python/"
echo "bindings in $out/{kotlin,swift,python}; library $lib"
