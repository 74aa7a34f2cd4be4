#!/bin/sh
. "$(dirname "$0")/common.sh"
# Output and input redirected: a background process must not hold the hook's pipes.
nohup "$APP_HOME/bin/server.sh" >> "$RUN_DIR/server.log" 2>&1 < /dev/null &
echo $! > "$PID_FILE"
log "started pid $(cat "$PID_FILE")"
