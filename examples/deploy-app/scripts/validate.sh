#!/bin/sh
. "$(dirname "$0")/common.sh"
expected=$(cat "$APP_HOME/VERSION")
i=0
while [ $i -lt 50 ]; do
    if [ -f "$RUN_DIR/heartbeat" ] && [ "$(sed -n 2p "$RUN_DIR/heartbeat")" = "$expected" ]; then
        log "version $expected is up (pid $(cat "$PID_FILE"))"
        exit 0
    fi
    sleep 0.1
    i=$((i + 1))
done
echo "version $expected did not come up" >&2
exit 1
