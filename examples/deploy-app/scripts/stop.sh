#!/bin/sh
. "$(dirname "$0")/common.sh"
echo "$DEPLOYMENT_ID $(cat "$(dirname "$0")/../app/VERSION")" >> "$RUN_DIR/stops"
if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    log "stopping pid $(cat "$PID_FILE")"
    kill "$(cat "$PID_FILE")"
    i=0
    while kill -0 "$(cat "$PID_FILE")" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
fi
rm -f "$PID_FILE"
log "stopped"
