#!/usr/bin/env bash
# Quick start, command 1: installs build dependencies, builds lote and runs
# the demo job on the embedded default (in-process, local data directory).
# Extra arguments go to `lote demo` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
data_dir="${LOTE_DATA_DIR:-$(mktemp -d -t lote-demo.XXXXXX)}"
# Both binaries: lote, and the example app's program (mandelzoom), which
# the demo publishes as an app in its second half.
cargo build --release --quiet --bins
cargo run --release --quiet --bin lote -- demo --data-dir "$data_dir" "$@"
