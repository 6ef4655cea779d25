#!/usr/bin/env bash
# Runs one flack-bench scenario against a freshly started cluster on loopback,
# so single nodes, Rust clusters, original clusters and mixed clusters are
# measured the same way in the same session (see BENCHMARKS.md).
#
#   benches/cluster.sh SHAPE SCENARIO [flack-bench options...]
#
# SHAPE is one of
#   rust1          one Rust node, no cluster
#   rust1c         one Rust node that is its own gproc_dist leader (a cluster of one)
#   rust2, rust3   two or three Rust nodes
#   rust6          six Rust nodes (for 100,000 connections: 20,000 files per process here)
#   erlang1        one original node (needs FLACK_ERLANG_HOME)
#   erlang2        two original nodes (needs FLACK_ERLANG_HOME)
#   erlang-rust    an original node (the leader) and a Rust node
#   rust-erlang    a Rust node (the leader) and an original node
# Clients are spread round-robin over the nodes (flack-bench --url per node);
# every node's server process is sampled for CPU and RSS.
#
# FLACK_ERLANG_HOME: a build of the original Erlang flack with lib/<app>/ebin
# for flack, gproc, gen_leader, cowboy, ranch, cowlib (jiffy from Debian's
# erlang-jiffy), as for tests/interop_original.rs. This script only starts it.
# FLACK_BIN / FLACK_BENCH_BIN: the binaries (default: target/release).
set -euo pipefail
cd "$(dirname "$0")/.."

shape=${1:?usage: benches/cluster.sh SHAPE SCENARIO [flack-bench options]}
scenario=${2:?usage: benches/cluster.sh SHAPE SCENARIO [flack-bench options]}
shift 2

flack=${FLACK_BIN:-target/release/flack}
bench=${FLACK_BENCH_BIN:-target/release/flack-bench}
cookie=bench_cookie
host=$(hostname -s)
work=$(mktemp -d -t flack-cluster-bench.XXXXXX)
pids=()

cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "cluster.sh: nothing listens on port $1" >&2
  return 1
}

# A private EPMD for this run (our own, from the same binary), so nothing is
# left registered or running afterwards and runs never see each other.
start_epmd() {
  local port
  port=$(free_port)
  "$flack" epmd -port "$port" 2>"$work/epmd.log" &
  pids+=($!)
  export ERL_EPMD_PORT=$port
  wait_port "$port"
}

# candidates: the gproc_dist candidate list, as Erlang terms.
candidates=""
add_candidate() { candidates="${candidates:+$candidates, }'$1@$host'"; }

urls=()
server_args=()

start_rust() { # NAME
  local name=$1 port dir
  port=$(free_port)
  dir="$work/$name"
  mkdir -p "$dir"
  if [ -n "$candidates" ]; then
    printf '[{gproc, [{gproc_dist, [%s]}]}].\n' "$candidates" >"$dir/sys.config"
    "$flack" foreground --bind 127.0.0.1 --port "$port" -sname "$name" -setcookie "$cookie" \
      --config "$dir/sys.config" --data-dir "$dir" 2>"$dir/log" &
  else
    "$flack" foreground --bind 127.0.0.1 --port "$port" 2>"$dir/log" &
  fi
  pids+=($!)
  server_args+=(--server-pid "$!")
  urls+=(--url "ws://127.0.0.1:$port/chat-server")
  wait_port "$port"
}

start_erlang() { # NAME
  local name=$1 port dir home=${FLACK_ERLANG_HOME:?"set FLACK_ERLANG_HOME to a build of the original flack"}
  port=$(free_port)
  dir="$work/$name"
  mkdir -p "$dir"
  local dist="[]"
  [ -n "$candidates" ] && dist="[$candidates]"
  printf '[{kernel, [{logger_level, warning}]},\n {flack, [{port, %s}]},\n {gproc, [{gproc_dist, %s}]}].\n' \
    "$port" "$dist" >"$dir/sys.config"
  local pa=()
  for ebin in "$home"/lib/*/ebin; do pa+=(-pa "$ebin"); done
  # The original's vm.args: +K true +A30.
  (cd "$dir" && exec erl -noshell -noinput -sname "$name" -setcookie "$cookie" +K true +A30 \
    -kernel logger_level warning -config "$dir/sys" "${pa[@]}" \
    -eval '[{ok, _} = application:ensure_all_started(A, permanent) || A <- [gen_leader, gproc, jiffy, ranch, cowlib, cowboy, flack, sasl]], ok.' \
    >"$dir/log" 2>&1) &
  pids+=($!)
  server_args+=(--server-pid "$!")
  urls+=(--url "ws://127.0.0.1:$port/chat-server")
  wait_port "$port"
}

# The lowest-sorted live candidate wins a fresh election: names are chosen so
# that the intended leader sorts first, and it is started first.
case "$shape" in
  rust1) ;;
  *) start_epmd ;;
esac
case "$shape" in
  rust1) start_rust bench1 ;;
  rust1c) add_candidate benchr1; start_rust benchr1 ;;
  rust2|rust3|rust6)
    n=${shape#rust}
    for i in $(seq 1 "$n"); do add_candidate "benchr$i"; done
    for i in $(seq 1 "$n"); do start_rust "benchr$i"; done ;;
  # The original needs gproc_dist running for its global registrations: a
  # single original node is the one candidate of its own cluster.
  erlang1) add_candidate benche1; start_erlang benche1 ;;
  erlang2)
    add_candidate benche1; add_candidate benche2
    start_erlang benche1; start_erlang benche2 ;;
  erlang-rust)
    add_candidate bencha; add_candidate benchb
    start_erlang bencha; sleep 2; start_rust benchb ;;
  rust-erlang)
    add_candidate bencha; add_candidate benchb
    start_rust bencha; sleep 2; start_erlang benchb ;;
  *) echo "cluster.sh: unknown shape $shape" >&2; exit 2 ;;
esac
# Let the election settle before clients register.
[ -n "$candidates" ] && sleep 3

# FLACK_BENCH_PROCESSES=N runs N load generators at once with the same
# options (one process holds at most the open-file limit of connections:
# 20,000 here), each with its own rooms and its own exact accounting; a
# --json FILE becomes FILE.1 ... FILE.N.
processes=${FLACK_BENCH_PROCESSES:-1}
if [ "$processes" -le 1 ]; then
  "$bench" "$scenario" "${urls[@]}" "${server_args[@]}" --label "$shape" "$@"
  exit
fi
args=("$@")
bench_pids=()
for i in $(seq 1 "$processes"); do
  run_args=()
  for ((j = 0; j < ${#args[@]}; j++)); do
    if [ "${args[j]}" = "--json" ] && [ $((j + 1)) -lt ${#args[@]} ]; then
      run_args+=(--json "${args[j + 1]}.$i")
      j=$((j + 1))
    else
      run_args+=("${args[j]}")
    fi
  done
  "$bench" "$scenario" "${urls[@]}" "${server_args[@]}" --label "$shape#$i" "${run_args[@]}" \
    >"$work/bench.$i.log" 2>&1 &
  bench_pids+=($!)
done
failed=0
for i in $(seq 1 "$processes"); do
  wait "${bench_pids[i - 1]}" || failed=$((failed + 1))
  echo "== load generator $i of $processes"
  tail -n 60 "$work/bench.$i.log"
done
echo "load generators: $((processes - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
