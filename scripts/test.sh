#!/usr/bin/env bash
# Quick start, command 2: installs build dependencies and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --browser
cargo test --all-targets --no-fail-fast "$@"
