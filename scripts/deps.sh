#!/usr/bin/env bash
# Installs what building lote needs beyond Rust: libclang for librocksdb-sys.
# Safe to run again; does nothing when everything is present.
set -euo pipefail

need=()
# bindgen needs libclang itself (libclang.so), not libclang-cpp, which many
# images ship alone.
have_libclang() {
  dpkg -s libclang-dev >/dev/null 2>&1 && return 0
  ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*/libclang-[0-9]*.so* >/dev/null 2>&1
}
if ! have_libclang; then
  need+=(clang libclang-dev)
fi
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v c++ >/dev/null 2>&1 || need+=(g++)
# Agents fetch http(s) resource files with curl.
command -v curl >/dev/null 2>&1 || need+=(curl)
# The console's tests drive a real headless Chromium through chromedriver
# (`scripts/deps.sh --browser`, which scripts/test.sh passes).
if [ "${1:-}" = "--browser" ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
  # The Azure gateway's test runs Azure's own Python SDK in a virtual
  # environment (pip installs the SDK there from PyPI).
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3 python3-venv)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "lote: installing ${need[*]} (to build RocksDB, test the console and the Azure gateway)" >&2
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "lote: run as root or install sudo, or install: ${need[*]}" >&2; exit 1; }
    sudo_cmd=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "lote: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
