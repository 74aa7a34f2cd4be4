#!/bin/sh
# Prepares the dependencies, unless the cache already brought them back.
set -e
if [ -f "$DEPS_DIR/ready" ]; then
  echo "dependencies restored from the cache, prepared $(cat "$DEPS_DIR/ready")"
  exit 0
fi
mkdir -p "$DEPS_DIR"
python3 -m compileall -q app
date -u +%FT%TZ > "$DEPS_DIR/ready"
echo "dependencies prepared and cached"
