#!/usr/bin/env bash
# Every test, on a Linux machine with a Docker engine and a Rust toolchain: installs what
# the tests need and the machine lacks, then runs `cargo test --workspace` with any
# arguments given (`tests/run.sh --test channel`).
#
# - Debian packages (as root, where apt-get exists): acl, git, iproute2, procps, openssh,
#   systemd, … Elsewhere it names what is missing and stops.
# - moto, the stand-in for AWS, at the version tests/requirements.txt pins, in a virtual
#   environment of its own (AGENT_TEST_VENV, default ~/.cache/agent-tests/moto-<version>),
#   put first on the PATH for the tests and the builds they run; an older moto installed
#   elsewhere is left alone.
# - A Docker engine installed but not running is started (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'tests/run.sh: %s\n' "$*" >&2; }

# Command → the Debian package that has it.
packages=(
  "setfacl:acl" "getfacl:acl" "git:git" "ip:iproute2" "ps:procps" "pkill:procps"
  "setpriv:util-linux" "useradd:passwd" "tar:tar" "gcc:gcc" "g++:g++" "make:make"
  "pkg-config:pkg-config" "systemd-analyze:systemd" "sshd:openssh-server"
  "python3:python3" "update-ca-certificates:ca-certificates"
)
missing=()
for entry in "${packages[@]}"; do
  tool=${entry%%:*} package=${entry#*:}
  if ! command -v "$tool" >/dev/null && ! [ -x "/usr/sbin/$tool" ]; then
    [[ " ${missing[*]} " == *" $package "* ]] || missing+=("$package")
  fi
done
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
[ -e /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "missing: ${missing[*]} (Debian package names); install them, then run this again"
    exit 2
  fi
fi

moto_pin=$(grep -v '^#' tests/requirements.txt | sed -n 's/^moto\[server\]==//p')
venv=${AGENT_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-tests/moto-$moto_pin}
if ! "$venv/bin/python3" -c "import moto, sys; sys.exit(moto.__version__ != '$moto_pin')" 2>/dev/null; then
  say "setting up moto $moto_pin in $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi
export AGENT_TEST_VENV=$venv
export PATH="$venv/bin:$PATH"

if ! docker info >/dev/null 2>&1; then
  if command -v dockerd >/dev/null && [ "$(id -u)" = 0 ]; then
    say "starting the Docker engine"
    setsid dockerd >/var/log/agent-tests-dockerd.log 2>&1 </dev/null &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  fi
  docker info >/dev/null 2>&1 || { say "no Docker engine answers; start it, then run this again"; exit 2; }
fi

exec cargo test --workspace "$@"
