#!/usr/bin/env bash
# Figures for `agent daemon` on this machine:
#   idle RSS and idle CPU      after the daemon has sat with an empty spool for a while
#   pickup latency (spool)     from a job file renamed into inbox/ to its first command
#                              starting, beside the cost of starting a container at all
#   pickup latency (SQS)       from SendMessage to the first command (needs moto_server)
#   throughput                 100 one-command jobs through the spool at concurrency 2
# Usage: tests/bench/daemon.sh [IMAGE]   (default: agent-busybox:latest)
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${1:-agent-busybox:latest}
JOBS=${JOBS:-100}
NAME=bench-daemon WAIT_TIME=20s
source tests/bench/daemon-setup.sh
now_ms() { date +%s%3N; }

"$AGENT" daemon --config "$work/agent.toml" 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 100); do "$AGENT" status --address "127.0.0.1:$port" >/dev/null 2>&1 && break; sleep 0.1; done

wait_result() { # wait_result FILE
  for _ in $(seq 6000); do [ -f "$1" ] && return 0; sleep 0.01; done
  echo "no result $1" >&2; cat "$work/daemon.log" >&2; return 1
}
# The time of the first "Running command" line of a job's log, in ms since the epoch.
first_command_ms() {
  local line
  line=$(grep -m1 'Running command' "$work/state/logs/$1.log")
  date -u -d "$(echo "$line" | awk '{print $2, $3}')" +%s%3N
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Idle figures, after a full SQS long poll (20 s) and many spool scans: what the idle
# loop keeps touching is in, not only what start-up touched.
sleep 25
rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$daemon_pid/status)
anon_kb=$(awk '/RssAnon/ {print $2}' /proc/$daemon_pid/status)
file_kb=$(awk '/RssFile/ {print $2}' /proc/$daemon_pid/status)
binary_mb=$(( $(stat -c %s "$AGENT") / 1048576 ))
# How much of the daemon's code layout list (agent/link/daemon.order) this binary still
# has: names carry hashes that a toolchain or dependency upgrade changes.
listed=$(grep -v '^#' agent/link/daemon.order | sort -u | wc -l)
present=$(nm --defined-only "$AGENT" 2>/dev/null | awk '{print $3}' | sort -u \
  | comm -12 - <(grep -v '^#' agent/link/daemon.order | sort -u) | wc -l)
cpu_ticks() { awk '{print $14 + $15}' /proc/$daemon_pid/stat; }
t0=$(cpu_ticks); sleep 10; t1=$(cpu_ticks)
hz=$(getconf CLK_TCK)
idle_cpu=$(awk -v d=$((t1 - t0)) -v hz="$hz" 'BEGIN {printf "%.2f", 100 * d / hz / 10}')

# Starting a container alone, for comparison: created and started, as the agent does before
# a job's first command (`docker run -d` returns once the container runs; its removal is
# not counted, as the agent removes its container after the job).
container_ms=$(for i in $(seq 5); do
  s=$(now_ms); id=$(docker run -d "$IMAGE" sleep 30); e=$(now_ms)
  docker rm -f "$id" >/dev/null; echo $((e - s))
done | median)

# Pickup latency through the spool.
latencies=()
for i in $(seq 10); do
  drop "lat-$i" true
  dropped=$(now_ms)
  wait_result "$work/spool/done/lat-$i.json"
  latencies+=($(( $(first_command_ms "lat-$i") - dropped )))
done
spool_ms=$(printf '%s\n' "${latencies[@]}" | median)

sqs_ms="n/a (moto_server not installed)"
if [ -n "$sqs_source" ]; then
  latencies=()
  for i in $(seq 5); do
    job "sqs-$i" true > "$work/sqs-$i.json"
    # Timed from the start of the SendMessage call, the client already made.
    sent=$(python3 -c "
import boto3, time
sqs = boto3.client('sqs', endpoint_url='http://127.0.0.1:$moto_port')
body = open('$work/sqs-$i.json').read()
start = int(time.time() * 1000)
sqs.send_message(QueueUrl='$queue_url', MessageBody=body)
print(start)")
    wait_result "$work/state/results/sqs-$i.json"
    latencies+=($(( $(first_command_ms "sqs-$i") - sent )))
  done
  sqs_ms="$(printf '%s\n' "${latencies[@]}" | median) ms"
fi

# Throughput: all jobs dropped at once.
start=$(now_ms)
for i in $(seq "$JOBS"); do drop "tp-$i" true; done
for i in $(seq "$JOBS"); do wait_result "$work/spool/done/tp-$i.json"; done
took=$(( $(now_ms) - start ))
failed=$(grep -L '"status": "SUCCEEDED"' "$work"/spool/done/tp-*.json | wc -l)
per_min=$(awk -v n="$JOBS" -v ms="$took" 'BEGIN {printf "%.1f", n * 60000 / ms}')

echo "idle RSS:                      $((rss_kb / 1024)) MB ($rss_kb kB)          target < 15 MB"
echo "  of which anonymous:          $anon_kb kB (heap, stacks: the agent's own memory)"
echo "  of which file-backed:        $file_kb kB (pages of the ${binary_mb} MB binary and libraries: shared with the jobs' processes, reclaimable)"
echo "  daemon code layout list:     $present of $listed functions found in the binary (rerun tests/bench/daemon-order.sh when this falls)"
echo "idle CPU:                      ${idle_cpu}% of one core over 10 s"
echo "container start (docker run):  ${container_ms} ms (median of 5)"
echo "pickup latency, spool:         ${spool_ms} ms to the first command (median of 10); beyond a container start: $((spool_ms - container_ms)) ms   target < 100 ms"
echo "pickup latency, SQS:           ${sqs_ms} to the first command (median of 5)   target < 1000 ms"
echo "throughput:                    $JOBS one-command jobs in ${took} ms = ${per_min} jobs/min at concurrency 2 ($failed not SUCCEEDED)   target >= 60"
