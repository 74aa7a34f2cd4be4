#!/usr/bin/env bash
# Figures for `agent run-local`, side by side with plain Docker on the same image:
#   start overhead      a one-command build vs `docker run --rm IMAGE true`
#   per-command cost    (1,000 `true` commands - 4) / 996
#   log throughput      1 GiB of output through the masker (10 secrets) vs `docker run | cat`
# Usage: tests/bench/run-local.sh [IMAGE]   (default: agent-busybox:latest)
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${1:-agent-busybox:latest}
RUNS=${RUNS:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q --release -p agent
AGENT="$CARGO_TARGET_DIR/release/agent"
docker image inspect "$IMAGE" >/dev/null 2>&1 || bash images/busybox/build.sh
command -v /usr/bin/time >/dev/null || { apt-get install -y -qq time >/dev/null; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

now_ms() { date +%s%3N; }
# Median wall time in ms of "$@" over $RUNS runs.
median_ms() {
  local times=() start end
  for _ in $(seq "$RUNS"); do
    start=$(now_ms); "$@" >/dev/null 2>&1; end=$(now_ms)
    times+=($((end - start)))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

spec() { # spec DIR COMMANDS...
  local dir=$1; shift
  mkdir -p "$dir"
  { echo "version: 0.2"; echo "phases:"; echo "  build:"; echo "    commands:"
    for c in "$@"; do echo "      - $c"; done; } > "$dir/buildspec.yml"
}

spec "$work/one" true
docker_true=$(median_ms docker run --rm "$IMAGE" true)
agent_one=$(median_ms "$AGENT" run-local --quiet -i "$IMAGE" -s "$work/one")

spec "$work/four" true true true true
mkdir -p "$work/thousand"
{ echo "version: 0.2"; echo "phases:"; echo "  build:"; echo "    commands:"
  for _ in $(seq 1000); do echo "      - true"; done; } > "$work/thousand/buildspec.yml"
RUNS=5
agent_four=$(median_ms "$AGENT" run-local --quiet -i "$IMAGE" -s "$work/four")
agent_thousand=$(median_ms "$AGENT" run-local --quiet -i "$IMAGE" -s "$work/thousand")
per_command=$(awk -v a="$agent_thousand" -v b="$agent_four" 'BEGIN {printf "%.3f", (a - b) / 996}')

# 1 GiB of 100-byte lines.
GEN="yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklm | head -c 1073741824"
spec "$work/gib" "$GEN"
secrets=()
for i in $(seq 10); do secrets+=(--secret "S$i=secret-value-number-$i-xyz"); done
start=$(now_ms); docker run --rm "$IMAGE" sh -c "$GEN" | cat >/dev/null; end=$(now_ms)
raw_ms=$((end - start))
start=$(now_ms)
/usr/bin/time -f '%M' -o "$work/rss" "$AGENT" run-local -i "$IMAGE" -s "$work/gib" "${secrets[@]}" >/dev/null 2>&1
end=$(now_ms)
agent_ms=$((end - start))
rss_kb=$(tail -1 "$work/rss")

mib_s() { awk -v ms="$1" 'BEGIN {printf "%.0f", 1024 / (ms / 1000)}'; }
echo "image: $IMAGE ($(nproc) cores)"
printf '%-34s %12s %12s %s\n' "measure" "docker" "agent" "target"
printf '%-34s %10s ms %9s ms %s\n' "start, one-command build" "$docker_true" "$agent_one" "agent - docker <= 150 ms (here $((agent_one - docker_true)) ms)"
printf '%-34s %12s %9s ms %s\n' "per command (1000 vs 4 commands)" "-" "$per_command" "< 1 ms"
printf '%-34s %7s MiB/s %6s MiB/s %s\n' "1 GiB of output, 10 secrets" "$(mib_s "$raw_ms")" "$(mib_s "$agent_ms")" "agent >= 0.8 x docker (here $(awk -v a="$raw_ms" -v b="$agent_ms" 'BEGIN {printf "%.2f", a / b}') x)"
printf '%-34s %12s %9s MB %s\n' "agent peak RSS, 1 GiB run" "-" "$((rss_kb / 1024))" "< 64 MB"
