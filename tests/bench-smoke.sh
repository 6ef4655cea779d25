#!/usr/bin/env bash
# A few seconds of each benchmark scenario against a real flack node, to show
# the load generator and the server work together. No figure is asserted
# here: speed is measured by the benchmarks (see BENCHMARKS.md); this only
# fails when a scenario fails its own checks (lost, duplicated or reordered
# deliveries, failed joins).
set -euo pipefail
cd "$(dirname "$0")/.."

flack=${FLACK_BIN:-target/debug/flack}
bench=${FLACK_BENCH_BIN:-target/debug/flack-bench}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$flack" foreground --bind 127.0.0.1 --port "$port" 2>/dev/null &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done

passed=0
failed=0
for scenario in idle fanout flood churn; do
  echo "-- flack-bench $scenario --smoke"
  if "$bench" "$scenario" --url "ws://127.0.0.1:$port/chat-server" --server-pid "$server" --smoke; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done
# A two-node Rust cluster with many small rooms spread over both nodes: every
# event crosses nodes and every chat's sequence comes from the leader, so a
# lost or duplicated delivery in the cluster path fails here.
echo "-- flack-bench flood --smoke on a two-node cluster (200 rooms x 6)"
if FLACK_BIN="$flack" FLACK_BENCH_BIN="$bench" benches/cluster.sh rust2 flood --smoke \
  --rooms 200 --members 6 --senders 2; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi
echo "bench smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
