#!/bin/sh
# Runs the instar test double (instar-double.ts) with the fault named by INSTAR_DOUBLE_FAULT.
# The double runs hundreds of times per test run, and node with the tsx loader takes twice as long
# to start as a plain bundle, so it is bundled with esbuild into .bundle/ on first use and again
# whenever a TypeScript source of the double or the harness is newer than the bundle.
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$(dirname "$here")")
bundle=$here/.bundle/instar-double.mjs
# the double imports the format readers and the harness's model
sources="$here $root/qcow2 $root/formats $root/model $root/oracles"
# shellcheck disable=SC2086
newer=$(find $sources -name '*.ts' -newer "$bundle" -print -quit 2>/dev/null)
if [ ! -f "$bundle" ] || [ -n "$newer" ]; then
  mkdir -p "$here/.bundle"
  tmp=$here/.bundle/build-$$.mjs
  # each builder writes its own file and renames it into place: concurrent first runs are safe
  if ! "$root/node_modules/.bin/esbuild" "$here/instar-double.ts" --bundle --platform=node --format=esm \
      --target=node20 --packages=external --outfile="$tmp" --log-level=warning >&2; then
    rm -f "$tmp"
    echo "instar-double: could not bundle the test double (run npm ci)" >&2
    exit 2
  fi
  mv -f "$tmp" "$bundle"
fi
exec node "$bundle" "$@"
