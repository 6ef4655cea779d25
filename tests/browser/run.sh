#!/usr/bin/env bash
# Tests of the web client in static/:
#   unit/  the client's state and connection logic, with node's test runner
#   e2e/   playwright-core driving Debian's chromium against real flack nodes
#
# Usage: tests/browser/run.sh [--screenshot]
#   FLACK_BIN  the flack binary (default: target/debug/flack under the repo
#              root; built with cargo when that default is missing)
#   CHROMIUM   the browser (default /usr/bin/chromium, installed from Debian
#              when missing; a browser is never downloaded by the tests)
# --screenshot also rewrites static/img/screenshot.png after the tests pass.
#
# The tests start their own flack nodes on free loopback ports
# ("$FLACK_BIN" foreground --bind 127.0.0.1 --port PORT --static-dir static)
# and stop them; any left behind are stopped here on exit, failure included.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

screenshot=0
for arg in "$@"; do
  case "$arg" in
    --screenshot) screenshot=1 ;;
    *) echo "run.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

if ! command -v node >/dev/null 2>&1; then
  echo "run.sh: node (20 or later) is needed" >&2
  exit 1
fi

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "run.sh: $chromium is missing; installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

if [ -z "${FLACK_BIN:-}" ]; then
  FLACK_BIN="$repo/target/debug/flack"
  if [ ! -x "$FLACK_BIN" ]; then
    echo "run.sh: $FLACK_BIN is missing; building it"
    (cd "$repo" && cargo build --bin flack --target-dir "$repo/target")
  fi
fi
case "$FLACK_BIN" in
  /*) ;;
  *) FLACK_BIN="$repo/$FLACK_BIN" ;;
esac
if [ ! -x "$FLACK_BIN" ]; then
  echo "run.sh: no flack binary at $FLACK_BIN (build it, or set FLACK_BIN)" >&2
  exit 1
fi
export FLACK_BIN

# Every node the tests start appends its pid here.
FLACK_PIDFILE="$(mktemp -t flack-e2e-pids.XXXXXX)"
export FLACK_PIDFILE
cleanup() {
  local pid
  while read -r pid; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done <"$FLACK_PIDFILE"
  rm -f "$FLACK_PIDFILE"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$here"
npm ci --no-audit --no-fund --loglevel=error

# One run of node's test runner for both, so its closing summary counts all.
# Files run one at a time: the machine has two cores.
node --test --test-concurrency=1 unit/ e2e/

if [ "$screenshot" = 1 ]; then
  node screenshot.mjs
fi
