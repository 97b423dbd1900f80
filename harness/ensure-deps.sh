#!/usr/bin/env bash
# Runs before `npm run fuzz` and `npm test` (npm's pre-scripts), so the quick start works on a
# fresh Debian machine: installs qemu-utils when qemu-img or qemu-io is missing, and the npm
# dependencies when node_modules is missing or older than package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing qemu-utils (qemu-img, qemu-io)..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-utils >/dev/null
  else
    echo "error: qemu-img and qemu-io are needed: install Debian's qemu-utils (sudo apt-get install qemu-utils)" >&2
    exit 2
  fi
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "installing npm dependencies (npm ci)..." >&2
  npm ci --no-audit --no-fund >&2
fi
