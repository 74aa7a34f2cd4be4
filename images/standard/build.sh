#!/usr/bin/env bash
# Builds agent-standard:latest, the standard build image, without a container
# registry:
#   1. agent-debian-base:bookworm: a minimal Debian root filesystem made with
#      debootstrap from the same Debian mirror the host's apt uses, imported
#      with `docker import`;
#   2. agent-standard:latest: `docker build` of the Dockerfile next to this
#      script, FROM that base image, installing the tools with apt-get.
set -euo pipefail

SCRIPT_NAME="standard/build.sh"
SELF="$(readlink -f "${BASH_SOURCE[0]}")"
HERE="$(dirname "$SELF")"
# shellcheck source=SCRIPTDIR/../lib/common.sh
. "$HERE/../lib/common.sh"

SUITE="bookworm"
BASE_IMAGE="${AGENT_DEBIAN_BASE_IMAGE:-agent-debian-base:$SUITE}"
IMAGE="${AGENT_STANDARD_IMAGE:-agent-standard:latest}"
DEFAULT_MIRROR="http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR="http://deb.debian.org/debian-security"
BUILD_NETWORK="${AGENT_IMAGES_BUILD_NETWORK:-host}"
IMAGE_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

usage() {
    cat <<EOF
Usage: $SCRIPT_NAME [--force] [--mirror URL]

Builds $BASE_IMAGE with debootstrap, then $IMAGE from
$HERE/Dockerfile.

  --force       rebuild both images even if they already exist
  --mirror URL  Debian mirror for debootstrap and for apt inside the images
                (default: the mirror in the host's apt sources, else
                $DEFAULT_MIRROR); with it, the host's sources are not copied
  -h, --help    show this help

Environment:
  DEBIAN_MIRROR               same as --mirror
  AGENT_DEBIAN_BASE_IMAGE     base image name (default agent-debian-base:$SUITE)
  AGENT_STANDARD_IMAGE        image name (default agent-standard:latest)
  AGENT_IMAGES_BUILD_NETWORK  network for \`docker build\` (default host, so
                              apt in the build reaches what the host's apt reaches)
EOF
}

FORCE=0
MIRROR="${DEBIAN_MIRROR:-}"
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --force) FORCE=1 ;;
        --mirror)
            [ $# -ge 2 ] || die "--mirror needs a URL"
            MIRROR="$2"
            shift
            ;;
        --mirror=*) MIRROR="${1#--mirror=}" ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown argument: $1"
            ;;
    esac
    shift
done

require_root "$SELF" "${ARGS[@]+"${ARGS[@]}"}"
require_docker

TOTAL_START=$(date +%s)

if image_exists "$IMAGE" && [ "$FORCE" -eq 0 ]; then
    log "image $IMAGE already exists, nothing to do (use --force to rebuild)"
    log "size of $IMAGE: $(image_size "$IMAGE")"
    if image_exists "$BASE_IMAGE"; then
        log "size of $BASE_IMAGE: $(image_size "$BASE_IMAGE")"
    fi
    exit 0
fi

# --- The host's apt sources ---------------------------------------------------

# Lists the host's apt source files that apt reads.
host_source_files() {
    local f
    if [ -f /etc/apt/sources.list ]; then
        echo /etc/apt/sources.list
    fi
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && echo "$f"
    done
    return 0
}

# Prints "URI SUITE" for every enabled binary (deb) source in FILE.
source_entries() {
    local file="$1"
    case "$file" in
        *.sources)
            awk '
                BEGIN { RS = ""; FS = "\n" }
                {
                    types = ""; uris = ""; suites = ""; enabled = "yes"
                    for (i = 1; i <= NF; i++) {
                        line = $i
                        if (line ~ /^[ \t]*#/ || line ~ /^[ \t]/) continue
                        n = index(line, ":")
                        if (n == 0) continue
                        key = tolower(substr(line, 1, n - 1))
                        val = substr(line, n + 1)
                        if (key == "types") types = val
                        else if (key == "uris") uris = val
                        else if (key == "suites") suites = val
                        else if (key == "enabled") enabled = tolower(val)
                    }
                    gsub(/[ \t]/, "", enabled)
                    if (enabled == "no" || (" " types " ") !~ /[ \t]deb[ \t]/) next
                    nu = split(uris, u, /[ \t]+/)
                    ns = split(suites, s, /[ \t]+/)
                    for (a = 1; a <= nu; a++) {
                        if (u[a] == "") continue
                        for (b = 1; b <= ns; b++) if (s[b] != "") print u[a], s[b]
                    }
                }
            ' "$file"
            ;;
        *)
            awk '
                /^[ \t]*#/ { next }
                $1 == "deb" {
                    i = 2
                    if ($2 ~ /^\[/) {
                        while (i <= NF && $i !~ /\]$/) i++
                        i++
                    }
                    if (i + 1 <= NF) print $i, $(i + 1)
                }
            ' "$file"
            ;;
    esac
}

all_source_entries() {
    local f
    while IFS= read -r f; do
        source_entries "$f"
    done < <(host_source_files)
}

# Picks the Debian mirror: a source for $SUITE itself, else the first source
# of a plain release suite (no -updates/-security/...), else the default.
detect_mirror() {
    local entries uri
    entries="$(all_source_entries)"
    uri="$(awk -v s="$SUITE" '$2 == s { print $1; exit }' <<<"$entries")"
    if [ -z "$uri" ]; then
        uri="$(awk '$2 !~ /-/ && $1 !~ /security/ { print $1; exit }' <<<"$entries")"
    fi
    uri="${uri%/}"
    echo "${uri:-$DEFAULT_MIRROR}"
}

detect_security_mirror() {
    local uri
    uri="$(all_source_entries | awk '$2 ~ /-security$/ { print $1; exit }')"
    uri="${uri%/}"
    echo "${uri:-$DEFAULT_SECURITY_MIRROR}"
}

# Copies the host's source files for $SUITE (and its -updates, -security...)
# into the root filesystem, with the keyrings they name. Returns 1 when the
# host has none, so the caller writes a configuration of its own.
copy_host_sources() {
    local rootfs="$1" f copied=0 keyring
    rm -f "$rootfs/etc/apt/sources.list"
    mkdir -p "$rootfs/etc/apt/sources.list.d"
    while IFS= read -r f; do
        if ! source_entries "$f" | awk -v s="$SUITE" '$2 == s || index($2, s "-") == 1 { found = 1 } END { exit !found }'; then
            continue
        fi
        if [ "$f" = /etc/apt/sources.list ]; then
            install -m 0644 "$f" "$rootfs/etc/apt/sources.list"
        else
            install -m 0644 "$f" "$rootfs/etc/apt/sources.list.d/$(basename "$f")"
        fi
        log "copied apt sources $f"
        copied=1
        # Keyrings named by signed-by= / Signed-By: that the rootfs lacks.
        while IFS= read -r keyring; do
            if [ -f "$keyring" ] && [ ! -e "$rootfs$keyring" ]; then
                install -D -m 0644 "$keyring" "$rootfs$keyring"
                log "copied keyring $keyring"
            fi
        done < <(grep -oiE '(signed-by=|^signed-by:[[:space:]]*)/[^][:space:],]+' "$f" | sed -E 's/^[^/]*//')
    done < <(host_source_files)
    [ "$copied" -eq 1 ]
}

write_sources() {
    local rootfs="$1" mirror="$2" security="${3:-}"
    rm -f "$rootfs/etc/apt/sources.list"
    mkdir -p "$rootfs/etc/apt/sources.list.d"
    {
        printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$mirror" "$SUITE" "$SUITE"
        if [ -n "$security" ]; then
            printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
                "$security" "$SUITE"
        fi
    } >"$rootfs/etc/apt/sources.list.d/debian.sources"
    chmod 0644 "$rootfs/etc/apt/sources.list.d/debian.sources"
    log "wrote apt sources for $mirror${security:+ and $security}"
}

# Carries over the host's apt settings that decide whether apt reaches the
# mirror at all: proxies and release-file date checks.
copy_host_acquire_settings() {
    local rootfs="$1" settings
    settings="$(apt-config dump 2>/dev/null | grep -E '^Acquire::((http|https|ftp)::Proxy|Check-Valid-Until|Check-Date|Max-FutureTime|ForceIPv4|ForceIPv6|Retries)' || true)"
    if [ -n "$settings" ]; then
        printf '%s\n' "$settings" >"$rootfs/etc/apt/apt.conf.d/90host-acquire"
        chmod 0644 "$rootfs/etc/apt/apt.conf.d/90host-acquire"
        log "carried over host apt settings: $(tr '\n' ' ' <<<"$settings")"
    fi
}

# --- Base image ---------------------------------------------------------------

ensure_debootstrap() {
    if command -v debootstrap >/dev/null 2>&1; then
        return 0
    fi
    log "debootstrap is not installed; installing it with apt-get"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap >&2; then
        apt-get update >&2 || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap >&2 ||
            die "could not install debootstrap"
    fi
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is still not on PATH"
}

WORK=""
ROOTFS=""
cleanup() {
    if [ -n "$ROOTFS" ] && [ -d "$ROOTFS" ]; then
        # Unmount whatever a failed debootstrap left mounted, deepest first,
        # before anything is deleted.
        awk -v r="$ROOTFS" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts |
            sort -r | while IFS= read -r m; do
            umount -l "$m" 2>/dev/null || true
        done
    fi
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        rm -rf --one-file-system "$WORK"
    fi
}
trap cleanup EXIT

build_base() {
    local mirror security="" includes="" start end old_id new_id
    start=$(date +%s)
    ensure_debootstrap
    command -v apt-config >/dev/null 2>&1 || die "apt-config is required (this script needs a Debian-based host)"

    local explicit_mirror=0
    if [ -n "$MIRROR" ]; then
        mirror="${MIRROR%/}"
        explicit_mirror=1
    else
        mirror="$(detect_mirror)"
        security="$(detect_security_mirror)"
    fi
    log "building $BASE_IMAGE with debootstrap --variant=minbase $SUITE from $mirror"

    umask 022
    WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/agent-debian-base.XXXXXX")"
    chmod 0755 "$WORK"
    ROOTFS="$WORK/rootfs"
    mkdir -p "$ROOTFS"

    # apt over https inside the image needs CA certificates.
    if [ "$explicit_mirror" -eq 0 ] && all_source_entries | grep -q '^https://'; then
        includes="--include=ca-certificates"
    elif [[ "$mirror" == https://* ]]; then
        includes="--include=ca-certificates"
    fi

    local dlog="$WORK/debootstrap.log"
    # shellcheck disable=SC2086 # $includes is empty or one word
    if ! debootstrap --variant=minbase $includes "$SUITE" "$ROOTFS" "$mirror" >"$dlog" 2>&1; then
        log "debootstrap failed; last lines of its output:"
        tail -n 30 "$dlog" >&2 || true
        if [ -f "$ROOTFS/debootstrap/debootstrap.log" ]; then
            log "last lines of $ROOTFS/debootstrap/debootstrap.log:"
            tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2 || true
        fi
        die "debootstrap failed"
    fi
    log "debootstrap finished ($(grep -c '^I: Configuring' "$dlog" || true) packages configured)"

    # apt inside the images uses the same sources as the host.
    if [ "$explicit_mirror" -eq 1 ]; then
        write_sources "$ROOTFS" "$mirror"
    elif ! copy_host_sources "$ROOTFS"; then
        log "the host's apt sources have no $SUITE entries; writing them from the detected mirror"
        write_sources "$ROOTFS" "$mirror" "$security"
    fi
    copy_host_acquire_settings "$ROOTFS"

    # Container-friendly defaults, as Debian's own container images have.
    printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
    chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
    printf 'Acquire::Languages "none";\n' >"$ROOTFS/etc/apt/apt.conf.d/docker-no-languages"

    # Strip package lists, caches and files that describe this host.
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
        "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/archives/partial/* \
        "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/lib/dpkg/*-old \
        "$ROOTFS"/var/log/apt/* "$ROOTFS"/var/log/dpkg.log "$ROOTFS"/var/log/bootstrap.log \
        "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/* "$ROOTFS"/root/.cache
    mkdir -p "$ROOTFS/var/lib/apt/lists/partial"
    : >"$ROOTFS/etc/resolv.conf"
    echo localhost >"$ROOTFS/etc/hostname"
    if [ -f "$ROOTFS/etc/machine-id" ]; then
        : >"$ROOTFS/etc/machine-id"
    fi

    old_id="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)"
    log "importing the root filesystem as $BASE_IMAGE"
    tar --numeric-owner -C "$ROOTFS" \
        --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' \
        -c . |
        docker import \
            --change "ENV PATH=$IMAGE_PATH" \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["bash"]' \
            --message "debootstrap --variant=minbase $SUITE $mirror" \
            - "$BASE_IMAGE" >/dev/null
    new_id="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")"
    if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi

    cleanup
    WORK=""
    ROOTFS=""
    end=$(date +%s)
    BASE_SECONDS=$((end - start))
    log "built $BASE_IMAGE in $(format_duration "$BASE_SECONDS")"
}

BASE_SECONDS=""
if image_exists "$BASE_IMAGE" && [ "$FORCE" -eq 0 ]; then
    log "image $BASE_IMAGE already exists, skipping debootstrap (use --force to rebuild)"
else
    build_base
fi

# --- Standard image -------------------------------------------------------------

STD_START=$(date +%s)
OLD_ID="$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
BUILD_ARGS=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    if [ -n "${!v:-}" ]; then
        BUILD_ARGS+=(--build-arg "$v")
    fi
done
log "building $IMAGE from $HERE/Dockerfile (network: $BUILD_NETWORK)"
docker build --network "$BUILD_NETWORK" "${BUILD_ARGS[@]}" -t "$IMAGE" "$HERE" >&2 ||
    die "docker build of $IMAGE failed"
NEW_ID="$(docker image inspect -f '{{.Id}}' "$IMAGE")"
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$NEW_ID" ]; then
    docker image rm "$OLD_ID" >/dev/null 2>&1 || true
fi

log "checking the image"
docker run --rm --network none "$IMAGE" bash -c \
    'set -e; for t in bash git curl python3 make zip unzip jq tar gzip ps; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }; done; [ "$(id -u builder)" = 1000 ]' ||
    die "$IMAGE lacks a tool or the builder user"

END=$(date +%s)
log "built $IMAGE in $(format_duration $((END - STD_START)))"
if [ -n "$BASE_SECONDS" ]; then
    log "time for $BASE_IMAGE: $(format_duration "$BASE_SECONDS")"
fi
log "total time: $(format_duration $((END - TOTAL_START)))"
log "size of $BASE_IMAGE: $(image_size "$BASE_IMAGE")"
log "size of $IMAGE: $(image_size "$IMAGE")"
