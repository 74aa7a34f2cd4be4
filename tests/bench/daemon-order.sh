#!/usr/bin/env bash
# Writes agent/link/daemon.order: the functions of the agent binary that `agent daemon`
# runs while it starts, waits for jobs (spool and SQS), answers /metrics and /status.json,
# hands out jobs, stores their results and drains. Release builds place them first in
# .text (see agent/build.rs), which keeps the idle daemon's resident set small.
#
# Run it again after a toolchain or dependency upgrade (symbol names carry hashes that
# change then); tests/bench/daemon.sh prints how much of the list the binary still has.
# Needs valgrind; moto_server (for the SQS paths) when installed.
# Usage: tests/bench/daemon-order.sh [IMAGE]   (default: agent-busybox:latest)
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${1:-agent-busybox:latest}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q --release -p agent
AGENT="$CARGO_TARGET_DIR/release/agent"
docker image inspect "$IMAGE" >/dev/null 2>&1 || bash images/busybox/build.sh
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }

work=$(mktemp -d)
daemon_pid=
moto_pid=
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null || true
  docker ps -aq --filter "label=agent.instance=order-daemon" | xargs -r docker rm -f >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
sqs_source=
if command -v moto_server >/dev/null; then
  moto_port=$(free_port)
  moto_server -H 127.0.0.1 -p "$moto_port" >/dev/null 2>&1 &
  moto_pid=$!
  export AWS_ACCESS_KEY_ID=AKIAORDER AWS_SECRET_ACCESS_KEY=order AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$moto_port") 2>/dev/null && break; sleep 0.1; done
  queue_url=$(python3 -c "import boto3; print(boto3.client('sqs', endpoint_url='http://127.0.0.1:$moto_port').create_queue(QueueName='order')['QueueUrl'])")
  sqs_source="[aws]
region = \"us-east-1\"
endpoint_url = \"http://127.0.0.1:$moto_port\"
[[sources]]
type = \"sqs\"
queue_url = \"$queue_url\"
wait_time = \"5s\""
fi

cat > "$work/agent.toml" <<TOML
version = 1
[agent]
name = "order-daemon"
work_dir = "$work/work"
state_dir = "$work/state"
concurrency = 2
metrics_address = "127.0.0.1:$port"
[jobs]
default_image = "$IMAGE"
[[sources]]
type = "spool"
path = "$work/spool"
$sqs_source
TOML

job() { # job ID
  printf '{"version":1,"id":"%s","kind":"build","source":{"type":"inline","files":{"buildspec.yml":"version: 0.2\\nphases:\\n  build:\\n    commands:\\n      - echo hi\\n"}}}' "$1"
}

valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/callgrind.out" \
  "$AGENT" daemon --config "$work/agent.toml" 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 600); do "$AGENT" status --address "127.0.0.1:$port" >/dev/null 2>&1 && break; sleep 0.1; done
for path in metrics status.json healthz readyz; do
  curl -fsS "http://127.0.0.1:$port/$path" >/dev/null || true
done
for i in 1 2 3; do
  job "spool-$i" > "$work/spool/inbox/.spool-$i"
  mv "$work/spool/inbox/.spool-$i" "$work/spool/inbox/spool-$i.json"
done
if [ -n "$sqs_source" ]; then
  for i in 1 2; do
    job "sqs-$i" | python3 -c "import boto3, sys; boto3.client('sqs', endpoint_url='http://127.0.0.1:$moto_port').send_message(QueueUrl='$queue_url', MessageBody=sys.stdin.read())"
  done
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
    | awk -v list=<(printf '%s\n' "$functions") 'BEGIN {while ((getline f < list) > 0) want[f] = 1} ($2 in want) {print $2}'
} > "$out"
echo "wrote $out: $(grep -vc '^#' "$out") functions"
