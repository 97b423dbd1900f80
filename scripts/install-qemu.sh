#!/usr/bin/env bash
# Installs a second qemu-img and qemu-io beside the system's (Debian bookworm's 7.2): qemu-utils
# from bookworm-backports (10.0), unpacked from its .deb into a private prefix, not installed. It
# runs as it is: the libraries it needs are those the system's qemu-utils already brought, which
# scripts/ensure-deps.sh installs first. Prints the path of the qemu-img to pass as --qemu-img.
#
# usage: bash scripts/install-qemu.sh [PREFIX]        (default: .qemu/bookworm-backports)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-.qemu/bookworm-backports}
qemu_img=$prefix/usr/bin/qemu-img
if [ ! -x "$qemu_img" ]; then
  bash scripts/ensure-deps.sh
  command -v apt-get >/dev/null || { echo "error: apt-get is needed to fetch Debian's qemu-utils" >&2; exit 2; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/state/lists/partial" "$work/cache/archives/partial"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  echo "deb [signed-by=$keyring] http://deb.debian.org/debian bookworm-backports main" >"$work/sources.list"
  # a private package list: the system's sources and lists are left as they are
  apt=(-o "Dir::Etc::sourcelist=$work/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State=$work/state"
    -o "Dir::Cache=$work/cache" -o Dir::State::status=/var/lib/dpkg/status -o APT::Sandbox::User=root)
  echo "fetching qemu-utils from bookworm-backports..." >&2
  apt-get "${apt[@]}" update -qq
  (cd "$work" && apt-get "${apt[@]}" download -qq qemu-utils/bookworm-backports)
  mkdir -p "$prefix"
  dpkg-deb -x "$work"/qemu-utils_*.deb "$prefix"
fi
"$qemu_img" --version | head -1 >&2
echo "$(cd "$(dirname "$qemu_img")" && pwd)/qemu-img"
