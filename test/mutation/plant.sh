#!/usr/bin/env bash
# Plants one bug in src/ (a sed expression on one file), builds, runs the given
# specs, reports whether they failed, and restores the file. Used to check that
# a regression test fails on the code it guards: `plant.sh src/or-set.ts 's/a/b/' core`
set -uo pipefail
cd "$(dirname "$0")/../.."
file=$1; expr=$2; shift 2
cp "$file" "$file.orig"
trap 'mv "$file.orig" "$file"' EXIT
sed -i "$expr" "$file"
if cmp -s "$file" "$file.orig"; then echo "PLANT DID NOT APPLY: $expr"; exit 2; fi
npx tsc -p . >/dev/null || { echo "BUILD FAILED"; exit 2; }
specs=(); for s in "$@"; do specs+=("dist/test/$s.spec.js"); done
out=$(npx mocha "${specs[@]}" 2>&1)
grep -E "passing|failing|^  [0-9]+\) " <<< "$out" | head -8
# a here-string, not `echo | grep -q`: with pipefail, grep -q quitting early
# made echo fail on SIGPIPE and reported a caught bug as NOT CAUGHT
if grep -qE "^  [0-9]+ failing" <<< "$out"; then echo "CAUGHT: $expr"; else echo "NOT CAUGHT: $expr"; fi
