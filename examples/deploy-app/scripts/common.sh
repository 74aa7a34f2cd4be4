# Shared by the hook scripts: where the service lives and keeps its state.
APP_HOME=${SAMPLE_APP_HOME:-/opt/sample-app}
RUN_DIR=${SAMPLE_APP_RUN:-$APP_HOME/../sample-app-run}
PID_FILE=$RUN_DIR/server.pid
export SAMPLE_APP_RUN=$RUN_DIR
log() { echo "[$LIFECYCLE_EVENT $DEPLOYMENT_ID] $*"; }
