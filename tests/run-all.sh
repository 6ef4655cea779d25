#!/usr/bin/env bash
# The project's one test command. On a fresh Debian machine it installs what
# the tests need (Erlang/OTP for the distribution tests, Chromium for the
# browser tests), then runs every test: Rust unit and integration tests,
# the browser tests of the web client, and a smoke run of the benchmarks.
#
# Tests that need the ORIGINAL Erlang flack build run only when
# FLACK_ERLANG_HOME points at it; they say so and skip otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

install_missing() {
  local packages=()
  command -v erl >/dev/null 2>&1 || packages+=(erlang-nox)
  [ -x /usr/bin/chromium ] || packages+=(chromium)
  command -v node >/dev/null 2>&1 || packages+=(nodejs npm)
  # tests/faults.rs cuts and degrades paths between nodes with nftables.
  command -v nft >/dev/null 2>&1 || packages+=(nftables)
  if [ ${#packages[@]} -gt 0 ]; then
    log "installing ${packages[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${packages[@]}"
  fi
}

install_missing

log "building"
cargo build --all-targets

log "Rust unit and integration tests"
cargo test --all-targets -- --test-threads="${FLACK_TEST_THREADS:-2}"

if [ -x tests/browser/run.sh ]; then
  log "web client tests (node + headless Chromium)"
  FLACK_BIN="$PWD/target/debug/flack" tests/browser/run.sh
fi

if [ -x tests/bench-smoke.sh ]; then
  log "benchmark smoke run"
  tests/bench-smoke.sh
fi

log "all tests passed"
