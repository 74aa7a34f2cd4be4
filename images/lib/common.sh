# shellcheck shell=bash
# Helpers shared by the image build scripts. Source this file; do not run it.

# Name of the calling script, for messages.
SCRIPT_NAME="${SCRIPT_NAME:-$(basename "$0")}"

log() {
    printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

die() {
    printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
    exit 1
}

# require_root SCRIPT_PATH ARGS...
# Re-runs the script through sudo when not root and sudo can be used;
# otherwise exits 1 with a message.
require_root() {
    local script="$1"
    shift
    if [ "$(id -u)" -eq 0 ]; then
        return 0
    fi
    if command -v sudo >/dev/null 2>&1; then
        if sudo -n true 2>/dev/null || [ -t 0 ]; then
            log "not running as root: re-running with sudo"
            exec sudo -E -- bash "$script" "$@"
        fi
    fi
    die "this script must be run as root (or by a user who can use sudo)"
}

require_docker() {
    command -v docker >/dev/null 2>&1 || die "docker is not installed or not on PATH"
    docker info >/dev/null 2>&1 || die "cannot reach the Docker engine (is dockerd running?)"
}

image_exists() {
    docker image inspect "$1" >/dev/null 2>&1
}

# Prints the size of an image in MB, e.g. "5.1 MB".
image_size() {
    local bytes
    bytes="$(docker image inspect -f '{{.Size}}' "$1")"
    awk -v b="$bytes" 'BEGIN { printf "%.1f MB (%d bytes)\n", b / 1000000, b }'
}

# Prints a duration given in whole seconds as e.g. "1m 23s".
format_duration() {
    local s="$1"
    if [ "$s" -ge 60 ]; then
        printf '%dm %02ds\n' $((s / 60)) $((s % 60))
    else
        printf '%ds\n' "$s"
    fi
}
