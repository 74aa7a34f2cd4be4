#!/bin/sh
# The sample service: writes a heartbeat with its version every second until stopped.
home=$(cd "$(dirname "$0")/.." && pwd)
run=${SAMPLE_APP_RUN:-$home/../sample-app-run}
version=$(cat "$home/VERSION")
trap 'echo "stopping $version"; rm -f "$run/heartbeat"; exit 0' TERM INT
echo "sample-app $version starting"
while :; do
    date +%s > "$run/heartbeat.tmp" && echo "$version" >> "$run/heartbeat.tmp" &&
        mv "$run/heartbeat.tmp" "$run/heartbeat"
    sleep 1 &
    wait $!
done
