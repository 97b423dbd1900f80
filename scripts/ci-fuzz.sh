#!/usr/bin/env bash
# The fuzzer as a CI step: the script behind action.yml, runnable anywhere with the same variables.
# Installs what it needs (scripts/ensure-deps.sh; qemu-utils through sudo on a runner that is not
# root; qemu 10.0 through scripts/install-qemu.sh when asked), fetches instar when given a URL,
# runs one fuzz run (or one shard of one), writes the job summary to $GITHUB_STEP_SUMMARY and the
# step's outputs to $GITHUB_OUTPUT (when set).
#
# Inputs (environment): INSTAR (a path or an http(s) URL; required), INSTAR_TOKEN (bearer token for
# the URL), ITERATIONS, DURATION, SEED, SHARD (K/N), QEMU_VERSION (7.2 or 10.0), FORMATS, OPS,
# REGISTRY (a registry file; default: this repository's), REPORTS (default instar-fuzz-reports),
# ARTIFACT (the name the reports are uploaded under, for the summary). Relative paths are taken
# from WORKSPACE (default: $GITHUB_WORKSPACE, else the working directory).
#
# Exit: 0 the run finished (outputs say whether it found new divergences), 2 bad input or a failed
# setup or run. The verdict on new divergences is the action's last step, after the upload.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
workspace=${WORKSPACE:-${GITHUB_WORKSPACE:-$PWD}}
fail() { echo "::error::$*" >&2; exit 2; }
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$workspace/$1" ;; esac; }
output() { [ -z "${GITHUB_OUTPUT:-}" ] || echo "$1=$2" >>"$GITHUB_OUTPUT"; }

# bad input is refused before any work
[ -n "${INSTAR:-}" ] ||
  fail "input instar is required: a path to the instar binary on the runner, or an http(s) URL of one"
for name in ITERATIONS DURATION SEED; do
  value=${!name:-}
  [ -z "$value" ] || [[ "$value" =~ ^-?[0-9]+$ ]] || fail "input ${name,,} must be a whole number, not '$value'"
done
[ -z "${SHARD:-}" ] || [[ "$SHARD" =~ ^[0-9]+/[0-9]+$ ]] || fail "input shard must be K/N (e.g. 2/4), not '$SHARD'"
case "${QEMU_VERSION:-7.2}" in
  7.2 | 10.0) ;;
  *) fail "input qemu-version must be 7.2 (Debian bookworm) or 10.0 (bookworm-backports), not '$QEMU_VERSION'" ;;
esac
registry=$(absolute "${REGISTRY:-$here/known-divergences.json}")
[ -f "$registry" ] || fail "input registry: no file $registry"
reports=$(absolute "${REPORTS:-instar-fuzz-reports}")

# qemu-img and qemu-io: Debian's qemu-utils, through sudo where the runner is not root
if { ! command -v qemu-img || ! command -v qemu-io; } >/dev/null && [ "$(id -u)" != 0 ]; then
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-utils >/dev/null
fi
bash "$here/scripts/ensure-deps.sh"
reference=()
version=$(qemu-img --version | head -1)
# an Ubuntu runner's qemu-utils is Ubuntu's: said, not refused (the registry is per qemu version)
[ "${QEMU_VERSION:-7.2}" != 7.2 ] || [[ "$version" == *" 7.2."* ]] ||
  echo "::warning::the runner's qemu-img is not Debian bookworm's 7.2 but: $version"
if [ "${QEMU_VERSION:-7.2}" = 10.0 ]; then
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] ||
    fail "qemu-version 10.0 comes from Debian's bookworm-backports: run the job in a Debian bookworm container" \
      "(container: node:20-bookworm)"
  sudo_=()
  [ "$(id -u)" = 0 ] || sudo_=(sudo)
  qemu_img=$("${sudo_[@]}" bash "$here/scripts/install-qemu.sh" "${RUNNER_TEMP:-/tmp}/qemu-10.0")
  reference=(--qemu-img "$qemu_img")
fi

# instar: a file on the runner, or fetched
case "$INSTAR" in
  http://* | https://*)
    instar="${RUNNER_TEMP:-/tmp}/instar"
    auth=()
    [ -z "${INSTAR_TOKEN:-}" ] || auth=(-H "Authorization: Bearer $INSTAR_TOKEN")
    curl -fsSL --retry 3 "${auth[@]}" -o "$instar" "$INSTAR" || fail "could not fetch instar from $INSTAR"
    chmod +x "$instar"
    ;;
  *)
    instar=$(absolute "$INSTAR")
    [ -x "$instar" ] || fail "input instar: $instar is not an executable file"
    ;;
esac

args=(--instar "$instar" "${reference[@]}" --known "$registry" --reports "$reports")
[ -z "${ITERATIONS:-}" ] || args+=(--iterations "$ITERATIONS")
[ -z "${DURATION:-}" ] || args+=(--duration "$DURATION")
[ -z "${SEED:-}" ] || args+=(--seed "$SEED")
[ -z "${SHARD:-}" ] || args+=(--shard "$SHARD")
[ -z "${FORMATS:-}" ] || args+=(--formats "$FORMATS")
[ -z "${OPS:-}" ] || args+=(--ops "$OPS")
code=0
(cd "$here" && node --min-semi-space-size=16 --import tsx cli/fuzz.ts "${args[@]}") || code=$?
output reports "$reports"
# 1 is new divergences, for the verdict; anything else but 0 is the run's own failure
[ "$code" -le 1 ] || fail "the fuzz run failed (exit $code): see the log above"
(cd "$here" && node --import tsx cli/job-summary.ts --reports "$reports" ${ARTIFACT:+--artifact "$ARTIFACT"})
field() { node -e "const s = require(process.argv[1]); console.log($1)" "$reports/summary.json"; }
new=$(field 's.newDivergences + s.corpus.newDivergences')
output new-divergences "$new"
output signatures "$(field 's.signatures.length')"
output exit-code "$code"
echo "fuzz exited $code: $new cases with new divergences"
