#!/usr/bin/env bash
# Builds every local image: agent-busybox:latest, then agent-debian-base:bookworm
# and agent-standard:latest. Arguments (e.g. --force) are passed to each script.
set -euo pipefail

SCRIPT_NAME="build-all.sh"
SELF="$(readlink -f "${BASH_SOURCE[0]}")"
HERE="$(dirname "$SELF")"
# shellcheck source=SCRIPTDIR/lib/common.sh
. "$HERE/lib/common.sh"

for arg in "$@"; do
    case "$arg" in
        --force) ;;
        -h | --help)
            echo "Usage: $SCRIPT_NAME [--force]"
            echo "Runs busybox/build.sh, then standard/build.sh, passing --force to both."
            exit 0
            ;;
        *) die "unknown argument: $arg (only --force is passed on)" ;;
    esac
done

require_root "$SELF" "$@"
require_docker

START=$(date +%s)
log "building agent-busybox"
bash "$HERE/busybox/build.sh" "$@"
log "building agent-debian-base and agent-standard"
bash "$HERE/standard/build.sh" "$@"
END=$(date +%s)

log "all images ready in $(format_duration $((END - START))):"
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' |
    grep -E '^agent-(busybox|debian-base|standard):' >&2 || true
