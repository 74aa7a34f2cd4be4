# Sourced by the daemon benchmarks: builds the release binary and the image, and writes a
# daemon config in $work with a spool and, where moto_server is installed, an SQS queue.
# Set before sourcing: IMAGE, NAME (the agent's name), WAIT_TIME (the SQS long poll).
# Sets: AGENT, work, port, moto_port, queue_url, sqs_source; removes it all at exit,
# with $daemon_pid when the script started one.

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q --release -p agent
AGENT="$CARGO_TARGET_DIR/release/agent"
docker image inspect "$IMAGE" >/dev/null 2>&1 || bash images/busybox/build.sh

work=$(mktemp -d)
daemon_pid=
moto_pid=
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null || true
  docker ps -aq --filter "label=agent.instance=$NAME" | xargs -r docker rm -f >/dev/null
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
  export AWS_ACCESS_KEY_ID=AKIABENCH AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$moto_port") 2>/dev/null && break; sleep 0.1; done
  queue_url=$(python3 -c "import boto3; print(boto3.client('sqs', endpoint_url='http://127.0.0.1:$moto_port').create_queue(QueueName='$NAME')['QueueUrl'])")
  sqs_source="[aws]
region = \"us-east-1\"
endpoint_url = \"http://127.0.0.1:$moto_port\"
[[sources]]
type = \"sqs\"
queue_url = \"$queue_url\"
wait_time = \"$WAIT_TIME\""
fi

cat > "$work/agent.toml" <<TOML
version = 1
[agent]
name = "$NAME"
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

job() { # job ID COMMAND
  printf '{"version":1,"id":"%s","kind":"build","source":{"type":"inline","files":{"buildspec.yml":"version: 0.2\\nphases:\\n  build:\\n    commands:\\n      - %s\\n"}}}' "$1" "$2"
}
drop() { # drop ID COMMAND
  job "$1" "$2" > "$work/spool/inbox/.$1"
  mv "$work/spool/inbox/.$1" "$work/spool/inbox/$1.json"
}
send() { # send ID COMMAND: over SQS
  job "$1" "$2" | python3 -c "import boto3, sys; boto3.client('sqs', endpoint_url='http://127.0.0.1:$moto_port').send_message(QueueUrl='$queue_url', MessageBody=sys.stdin.read())"
}
