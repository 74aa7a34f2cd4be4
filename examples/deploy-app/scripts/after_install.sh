#!/bin/sh
. "$(dirname "$0")/common.sh"
test -x "$APP_HOME/bin/server.sh" || { echo "server.sh is not executable" >&2; exit 1; }
log "installed version $(cat "$APP_HOME/VERSION")"
