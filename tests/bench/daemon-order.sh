#!/usr/bin/env bash
# Writes agent/link/daemon.order: the functions of the agent binary that `agent daemon`
# runs while it starts, waits for jobs (spool and SQS), answers /metrics and /status.json,
# hands out jobs, stores their results and drains. Release builds place them first in
# .text (see agent/build.rs), which keeps the idle daemon's resident set small.
#
# Run it again after a toolchain or dependency upgrade and after changes to the daemon's
# code (symbol names carry hashes, and closures are numbered, that change then);
# tests/bench/daemon.sh prints how much of the list the binary still has.
# Needs valgrind; moto_server (for the SQS paths) when installed.
# Usage: tests/bench/daemon-order.sh [IMAGE]   (default: agent-busybox:latest)
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${1:-agent-busybox:latest}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
NAME=order-daemon WAIT_TIME=5s
source tests/bench/daemon-setup.sh

valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/callgrind.out" \
  "$AGENT" daemon --config "$work/agent.toml" 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 600); do "$AGENT" status --address "127.0.0.1:$port" >/dev/null 2>&1 && break; sleep 0.1; done
for path in metrics status.json healthz readyz; do
  curl -fsS "http://127.0.0.1:$port/$path" >/dev/null || true
done
for i in 1 2 3; do drop "spool-$i" "echo hi"; done
if [ -n "$sqs_source" ]; then
  for i in 1 2; do send "sqs-$i" "echo hi"; done
fi
for _ in $(seq 1200); do
  n=$(ls "$work/state/results" 2>/dev/null | wc -l)
  [ "$n" -ge $(( ${sqs_source:+2} + 3 )) ] && break
  sleep 0.1
done
# Idle for a while (scans, long polls, the watchdog), scraped as Prometheus does.
for _ in $(seq 4); do
  sleep 5
  curl -fsS "http://127.0.0.1:$port/metrics" >/dev/null || true
done
kill -TERM "$daemon_pid"
wait "$daemon_pid" || true
daemon_pid=

out=agent/link/daemon.order
functions=$(grep -oE '^c?fn=\([0-9]+\) .*' "$work/callgrind.out" | sed -E 's/^c?fn=\([0-9]+\) //' | sort -u)
{
  echo "# Functions of agent daemon, in binary order; made by tests/bench/daemon-order.sh with"
  echo "# $(rustc --version). A layout hint for release builds (agent/build.rs)."
  # Kept in the order they have now, so code that sits together stays together.
  nm --defined-only "$AGENT" \
    | awk '$2 ~ /^[tTwW]$/ {print $1, $3}' \
    | sort \
    | awk -v list=<(printf '%s\n' "$functions") 'BEGIN {while ((getline f < list) > 0) want[f] = 1} ($2 in want) && !seen[$2]++ {print $2}'
} > "$out"
echo "wrote $out: $(grep -vc '^#' "$out") functions"
