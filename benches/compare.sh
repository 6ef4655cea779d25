#!/usr/bin/env bash
# Runs the cluster comparison of BENCHMARKS.md in one session: each
# workload against each cluster shape (benches/cluster.sh), one fresh
# cluster per run, and prints one Markdown table row per run.
#
#   benches/compare.sh [SHAPE...]        (default: every shape that can run)
#
# Shapes that need the original Erlang flack (erlang1, erlang2, erlang-rust,
# rust-erlang) run only when FLACK_ERLANG_HOME is set. FLACK_COMPARE_SECS
# sets the measured seconds (default 10). The raw JSON reports are kept in
# FLACK_COMPARE_OUT (default: a new temporary folder, printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FLACK_COMPARE_SECS:-10}
out=${FLACK_COMPARE_OUT:-$(mktemp -d -t flack-compare.XXXXXX)}
mkdir -p "$out"

if [ $# -gt 0 ]; then
  shapes=("$@")
else
  shapes=(rust1 rust1c rust2 rust3)
  if [ -n "${FLACK_ERLANG_HOME:-}" ]; then
    shapes+=(erlang1 erlang2 erlang-rust rust-erlang)
  fi
fi

# name|flack-bench arguments
workloads=(
  "100 rooms x 10|flood --rooms 100 --members 10 --senders 1"
  "1 room x 1000|flood --rooms 1 --members 1000 --senders 4"
  "1000 rooms x 6|flood --rooms 1000 --members 6 --senders 2"
)

printf '| workload | shape | deliveries/s | server cores | server CPU µs per delivery | other cores | lost / dup / reordered | sequence |\n'
printf '|---|---|---|---|---|---|---|---|\n'
for workload in "${workloads[@]}"; do
  name=${workload%%|*}
  args=${workload#*|}
  for shape in "${shapes[@]}"; do
    json="$out/$(echo "$name" | tr ' ' '_')-$shape.json"
    # shellcheck disable=SC2086 # the workload's arguments are words
    if ! benches/cluster.sh "$shape" $args --duration "$secs" --warmup 2 --json "$json" \
      >"$json.log" 2>&1; then
      printf '| %s | %s | failed (see %s.log) | | | | | |\n' "$name" "$shape" "$json"
      continue
    fi
    python3 - "$json" "$name" "$shape" <<'PY'
import json, sys
path, name, shape = sys.argv[1:]
report = json.load(open(path))
r, cpu = report["results"], report["client_cpu"]
rate = r["deliveries_per_sec"]
cores = cpu.get("server_cores_used") or 0.0
per = cores / rate * 1e6 if rate else float("nan")
seq = r.get("sequence", {}).get("reading", "")
print(f"| {name} | {shape} | {rate:,.0f} | {cores:.2f} | {per:.2f} | "
      f"{cpu.get('other_cores_used', 0):.2f} | {r['lost']} / {r['duplicated']} / {r['reordered']} | {seq} |")
PY
  done
done
echo
echo "reports: $out"
