#!/usr/bin/env bash
# Uploads to the same local S3 server (moto_server), side by side:
#   1 GiB as one file:       the agent (artifacts) vs `aws s3 cp`
#   10,000 files of 10 KiB:  the agent (artifacts) vs `aws s3 sync`
# plus the agent's peak RSS. Usage: tests/bench/s3-upload.sh [moto|s3s-fs]
# moto_server is a Python server and caps throughput; s3s-fs (`cargo install s3s-fs@0.14.1
# --features binary`, a Rust S3 server over a directory) does not.
set -euo pipefail
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q --release -p agent
AGENT="$CARGO_TARGET_DIR/release/agent"
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
venv=/var/tmp/agent-bench-venv
[ -x "$venv/bin/aws" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet awscli; }

work=$(mktemp -d)
SERVER=${1:-moto}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
case "$SERVER" in
  moto) moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 & server_name="moto_server $(python3 -c 'import moto; print(moto.__version__)')" ;;
  s3s-fs) mkdir -p "$work/store"
    s3s-fs --host 127.0.0.1 --port "$port" --access-key bench --secret-key bench "$work/store" >/dev/null 2>&1 &
    server_name="s3s-fs" ;;
  *) echo "unknown server $SERVER" >&2; exit 2 ;;
esac
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
aws() { "$venv/bin/aws" --endpoint-url "$AWS_ENDPOINT_URL" "$@"; }
aws s3 mb s3://bench >/dev/null

mkdir -p "$work/big/data" "$work/small/data"
head -c 1073741824 /dev/urandom > "$work/big/data/one.bin"
python3 - "$work/small/data" <<'PY'
import os, sys
for i in range(10000):
    with open(os.path.join(sys.argv[1], f"f{i:05}.bin"), "wb") as f:
        f.write(os.urandom(10240))
PY
for d in big small; do
  printf 'version: 0.2\nphases:\n  build:\n    commands:\n      - "true"\nartifacts:\n  files:\n    - "data/**/*"\n' > "$work/$d/buildspec.yml"
done

now_ms() { date +%s%3N; }
hz=$(getconf CLK_TCK)
server_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
# Runs a command; sets WALL (ms), CPU (client user+sys, s), SERVER (the server's CPU over
# the same time, s) and RSS (client peak, KB).
timed() {
  local t0 s0
  s0=$(server_ticks); t0=$(now_ms)
  /usr/bin/time -f '%U %S %M' -o "$work/time" "$@" >/dev/null 2>&1
  WALL=$(( $(now_ms) - t0 ))
  SERVER=$(awk -v d=$(( $(server_ticks) - s0 )) -v hz="$hz" 'BEGIN {printf "%.1f", d / hz}')
  read -r user sys RSS < <(tail -1 "$work/time")
  CPU=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.1f", u + s}')
}
agent_upload() { # DIR PREFIX
  timed "$AGENT" run-local --quiet --executor host -s "$1" --artifacts "s3://bench/$2" \
    --summary "$work/summary.json"
  # The upload phase alone; the whole run (start, checks, summary) is in WALL.
  PHASE=$(python3 -c "import json; s=json.load(open('$work/summary.json')); print([p['duration_ms'] for p in s['phases'] if p['phase']=='UPLOAD_ARTIFACTS'][0])")
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
row() { # LABEL CLI_MS CLI_CPU CLI_SERVER AGENT_MS AGENT_PHASE AGENT_CPU AGENT_SERVER RSS
  printf '%-24s %8s ms %5s s %5s s | %8s ms (%s) %5s s %5s s | %6sx | %s MB\n' \
    "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$(ratio "$2" "$5")" "$(( $9 / 1024 ))"
}

# Each side RUNS times (default 3), alternating, with dirty pages flushed before every
# upload so that one run's writeback does not slow the next; medians are shown.
RUNS=${RUNS:-3}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() { # CASE (big|small) -> the row's figures
  local i cli_w=() cli_c=() cli_s=() ag_w=() ag_p=() ag_c=() ag_s=() rss=0
  for i in $(seq "$RUNS"); do
    sync
    if [ "$1" = big ]; then
      timed aws s3 cp --quiet "$work/big/data/one.bin" "s3://bench/cli-big-$i/one.bin"
    else
      timed aws s3 sync --quiet "$work/small/data" "s3://bench/cli-small-$i/"
    fi
    cli_w+=("$WALL"); cli_c+=("$CPU"); cli_s+=("$SERVER")
    sync
    agent_upload "$work/$1" "agent-$1-$i"
    ag_w+=("$WALL"); ag_p+=("$PHASE"); ag_c+=("$CPU"); ag_s+=("$SERVER")
    [ "$RSS" -gt "$rss" ] && rss=$RSS
  done
  m() { printf '%s\n' "$@" | median; }
  echo "$(m "${cli_w[@]}") $(m "${cli_c[@]}") $(m "${cli_s[@]}") $(m "${ag_w[@]}") $(m "${ag_p[@]}") $(m "${ag_c[@]}") $(m "${ag_s[@]}") $rss"
}
read -r -a big < <(measure big)
read -r -a small < <(measure small)
big[4]="${big[4]} ms upload"
small[4]="${small[4]} ms upload"

echo "local S3: $server_name on 127.0.0.1 ($(nproc) cores)"
echo "medians of $RUNS runs each   aws cli: wall, its CPU, server CPU | agent: wall (upload phase), its CPU, server CPU | speedup (wall) | agent peak RSS"
row "1 GiB, one file" "${big[@]}"
row "10,000 files of 10 KiB" "${small[@]}"
echo "targets: agent >= 2x faster on both, peak RSS < 128 MB"
