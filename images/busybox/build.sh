#!/usr/bin/env bash
# Builds agent-busybox:latest, a tiny image for tests, from Debian's
# busybox-static package. No container registry is needed: the root
# filesystem is laid out here and imported with `docker import`.
set -euo pipefail

SCRIPT_NAME="busybox/build.sh"
SELF="$(readlink -f "${BASH_SOURCE[0]}")"
HERE="$(dirname "$SELF")"
# shellcheck source=SCRIPTDIR/../lib/common.sh
. "$HERE/../lib/common.sh"

IMAGE="${AGENT_BUSYBOX_IMAGE:-agent-busybox:latest}"
IMAGE_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Applets the tests rely on; the build fails if one is missing.
REQUIRED_APPLETS="sh env sleep cat printf od tr wget tar kill id su mkdir cp ls sed grep head yes dd"

usage() {
    cat <<EOF
Usage: $SCRIPT_NAME [--force]

Builds the Docker image $IMAGE from Debian's busybox-static package.

  --force    rebuild even if the image already exists
  -h, --help show this help

Environment: AGENT_BUSYBOX_IMAGE overrides the image name.
EOF
}

FORCE=0
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --force) FORCE=1 ;;
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
for tool in apt-get dpkg-deb tar; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required (this script needs a Debian-based host)"
done

if image_exists "$IMAGE" && [ "$FORCE" -eq 0 ]; then
    log "image $IMAGE already exists, nothing to do (use --force to rebuild)"
    log "size of $IMAGE: $(image_size "$IMAGE")"
    exit 0
fi

START=$(date +%s)
umask 022
WORK="$(mktemp -d "${TMPDIR:-/tmp}/agent-busybox.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# --- Fetch the package --------------------------------------------------------
DEB_DIR="$WORK/deb"
mkdir -p "$DEB_DIR"
# apt downloads as the unprivileged _apt user where it can write the directory.
if id _apt >/dev/null 2>&1; then
    chmod 0711 "$WORK"
    chown _apt "$DEB_DIR"
fi

download() {
    (cd "$DEB_DIR" && apt-get download busybox-static)
}

log "downloading busybox-static with apt-get"
if ! download >&2; then
    log "download failed; running apt-get update and trying again"
    apt-get update >&2 || die "apt-get update failed"
    download >&2 || die "apt-get download busybox-static failed"
fi

DEB="$(find "$DEB_DIR" -maxdepth 1 -name 'busybox-static_*.deb' | head -n 1)"
[ -n "$DEB" ] || die "no busybox-static .deb was downloaded"
log "using $(basename "$DEB")"

dpkg-deb -x "$DEB" "$WORK/pkg"
BUSYBOX="$WORK/pkg/bin/busybox"
[ -x "$BUSYBOX" ] || die "the package has no executable bin/busybox"

APPLETS="$("$BUSYBOX" --list)"
for applet in $REQUIRED_APPLETS; do
    grep -qx -- "$applet" <<<"$APPLETS" || die "busybox in this package lacks the '$applet' applet"
done

# --- Lay out the root filesystem ---------------------------------------------
ROOTFS="$WORK/rootfs"
mkdir -p "$ROOTFS"
chmod 0755 "$ROOTFS"
mkdir -p "$ROOTFS"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,dev,proc,sys,tmp,var/tmp,home/builder,root}
install -m 0755 "$BUSYBOX" "$ROOTFS/bin/busybox"

# One symlink per applet at the path busybox itself suggests (usr/bin/env,
# sbin/ifconfig, ...), plus one in /bin for every applet so any PATH works.
link_count=0
while IFS= read -r path; do
    [ -n "$path" ] || continue
    name="$(basename "$path")"
    [ "$name" = busybox ] && continue
    dir="$(dirname "$path")"
    mkdir -p "$ROOTFS/$dir"
    # Relative target: one "../" per directory level, then bin/busybox.
    up="$(awk -v p="$path" 'BEGIN { n = gsub("/", "/", p); s = ""; for (i = 0; i < n; i++) s = s "../"; print s }')"
    if [ ! -e "$ROOTFS/$path" ] && [ ! -L "$ROOTFS/$path" ]; then
        ln -s "${up}bin/busybox" "$ROOTFS/$path"
        link_count=$((link_count + 1))
    fi
done < <("$BUSYBOX" --list-full)
while IFS= read -r name; do
    if [ -z "$name" ] || [ "$name" = busybox ]; then
        continue
    fi
    if [ ! -e "$ROOTFS/bin/$name" ] && [ ! -L "$ROOTFS/bin/$name" ]; then
        ln -s busybox "$ROOTFS/bin/$name"
        link_count=$((link_count + 1))
    fi
done <<<"$APPLETS"
[ -L "$ROOTFS/bin/sh" ] || die "no /bin/sh link was created"
log "created $link_count applet links"

chmod 1777 "$ROOTFS/tmp" "$ROOTFS/var/tmp"
chmod 0700 "$ROOTFS/root"

cat >"$ROOTFS/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
builder:x:1000:1000:builder:/home/builder:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$ROOTFS/etc/group" <<'EOF'
root:x:0:
builder:x:1000:
nogroup:x:65534:
EOF
cat >"$ROOTFS/etc/shadow" <<'EOF'
root:*:19000:0:99999:7:::
builder:!:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
EOF
cat >"$ROOTFS/etc/shells" <<'EOF'
/bin/sh
/bin/ash
EOF
chmod 0644 "$ROOTFS/etc/passwd" "$ROOTFS/etc/group" "$ROOTFS/etc/shells"
chmod 0640 "$ROOTFS/etc/shadow"
chown 1000:1000 "$ROOTFS/home/builder"
chmod 0755 "$ROOTFS/home/builder"

# --- Import ------------------------------------------------------------------
OLD_ID="$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
log "importing the root filesystem as $IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . |
    docker import \
        --change "ENV PATH=$IMAGE_PATH" \
        --change 'CMD ["sh"]' \
        --message "busybox-static from $(basename "$DEB")" \
        - "$IMAGE" >/dev/null
NEW_ID="$(docker image inspect -f '{{.Id}}' "$IMAGE")"
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$NEW_ID" ]; then
    # The replaced image is now untagged; drop it unless something still uses it.
    docker image rm "$OLD_ID" >/dev/null 2>&1 || true
fi

# --- Smoke test ---------------------------------------------------------------
log "checking the image"
out="$(docker run --rm --network none "$IMAGE" sh -c 'echo ok; id -u; su builder -c "id -u"')" ||
    die "the image does not start a shell"
expected="$(printf 'ok\n0\n1000')"
[ "$out" = "$expected" ] || die "unexpected smoke test output: $out"

END=$(date +%s)
log "built $IMAGE in $(format_duration $((END - START)))"
log "size of $IMAGE: $(image_size "$IMAGE")"
