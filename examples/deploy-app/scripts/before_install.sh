#!/bin/sh
. "$(dirname "$0")/common.sh"
mkdir -p "$RUN_DIR"
log "preparing $RUN_DIR for $APPLICATION_NAME/$DEPLOYMENT_GROUP_NAME"
