#!/usr/bin/env bash
# Runs Stryker over the core modules one at a time, with the one config of
# stryker.config.mjs (MUTATION_MODULE picks the files to mutate; each module
# keeps its own incremental file and reports under reports/mutation/<module>/),
# then prints the table of scores and the surviving mutants.
# `test/mutation/modules.sh walker engine` runs only those modules.
set -uo pipefail
cd "$(dirname "$0")/../.."
modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then modules=(heads codecs write-set or-set walker engine); fi
for m in "${modules[@]}"; do
  echo "=== $m: $(date -u +%H:%M:%S) UTC"
  MUTATION_MODULE=$m PROPERTY_RUNS=10 npx stryker run || echo "=== $m: stryker exited $?"
done
node test/mutation/summary.mjs
