#!/usr/bin/env bash
# Runs before `npm run fuzz` and `npm test` (npm's pre-scripts), so the quick start works on a
# fresh Debian machine: installs qemu-utils when qemu-img or qemu-io is missing, and the npm
# dependencies when node_modules is missing or older than package-lock.json.
#
# --with-browser (used by `npm test`): also installs Debian's chromium when it is missing (as
# root; about 500 MB), for the headless-browser test of the reports index
# (test/report-index.test.ts).
set -euo pipefail
cd "$(dirname "$0")/.."

with_browser=0
for arg in "$@"; do
  case "$arg" in
    --with-browser) with_browser=1 ;;
    *) echo "usage: bash scripts/ensure-deps.sh [--with-browser]" >&2; exit 2 ;;
  esac
done

apt_updated=0
# apt-installs Debian packages (as root, quietly, noninteractive); runs apt-get update first only
# when apt knows no candidate for one of them, and once more (at most once per run) when the
# install fails on stale package lists
apt_install() {
  local pkg
  for pkg in "$@"; do
    [ "$pkg" = "${pkg#-}" ] || continue
    if [ "$apt_updated" = 0 ] && ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [^(]'; then
      apt-get update -qq
      apt_updated=1
    fi
  done
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; then
    [ "$apt_updated" = 0 ] || return 1
    apt-get update -qq
    apt_updated=1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

if ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null; then
  if can_apt; then
    echo "installing qemu-utils (qemu-img, qemu-io)..." >&2
    apt_install qemu-utils
  else
    echo "error: qemu-img and qemu-io are needed: install Debian's qemu-utils (sudo apt-get install qemu-utils)" >&2
    exit 2
  fi
fi

# the names test/report-index.test.ts looks for; Debian's is chromium
have_browser() {
  command -v chromium || command -v chromium-browser || command -v google-chrome || command -v google-chrome-stable
} >/dev/null

# Without a browser the test is skipped, except in CI (CI=true), where it must run: so only in CI
# is a browser that cannot be installed an error.
if [ "$with_browser" = 1 ] && ! have_browser; then
  hint="install Debian's chromium (sudo apt-get install --no-install-recommends chromium)"
  if can_apt; then
    echo "installing chromium (headless browser for the reports index test)..." >&2
    if ! apt_install --no-install-recommends chromium; then
      if [ "${CI:-}" = true ]; then
        echo "error: installing chromium failed; the reports index test needs it in CI" >&2
        exit 2
      fi
      echo "warning: installing chromium failed; the reports index browser test will be skipped" >&2
    fi
  elif [ "${CI:-}" = true ]; then
    echo "error: chromium is needed by the reports index test in CI: $hint" >&2
    exit 2
  else
    echo "warning: chromium is missing, so the reports index browser test will be skipped: $hint" >&2
  fi
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "installing npm dependencies (npm ci)..." >&2
  npm ci --no-audit --no-fund >&2
fi
