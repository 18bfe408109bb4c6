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
# the commit each module ran on ("+changes" when the tree had uncommitted
# changes), when and how long, beside its reports: summary.mjs prints them
commit=$(git rev-parse --short HEAD)
if [ -n "$(git status --porcelain -- src test stryker.config.mjs)" ]; then commit="$commit+changes"; fi
for m in "${modules[@]}"; do
  echo "=== $m: $(date -u +%H:%M:%S) UTC"
  start=$(date +%s)
  MUTATION_MODULE=$m PROPERTY_RUNS=10 npx stryker run || echo "=== $m: stryker exited $?"
  mkdir -p "reports/mutation/$m"
  printf '{"commit":"%s","date":"%s","minutes":%d}\n' "$commit" "$(date -u +%F)" $(( ($(date +%s) - start + 30) / 60 )) > "reports/mutation/$m/run.json"
done
node test/mutation/summary.mjs
