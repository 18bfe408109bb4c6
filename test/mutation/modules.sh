#!/usr/bin/env bash
# Runs Stryker over the core modules one at a time, with the one config of
# stryker.config.mjs (MUTATION_MODULE picks the files to mutate; each module
# keeps its own incremental file and reports under reports/mutation/<module>/),
# then prints the table of scores and the surviving mutants.
# `test/mutation/modules.sh walker engine` runs only those modules;
# `engine@825-958` mutates those lines of the module's one file only, with
# its reports and incremental file under reports/mutation/engine-825-958/
# (MUTATION_REPORTS), so ranges of one file can be run apart and summed:
# engine.ts is two hours whole at concurrency 1 on the shared machine.
set -uo pipefail
cd "$(dirname "$0")/../.."
modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then modules=(heads codecs write-set or-set walker engine); fi
# the commit each module ran on ("+changes" when the tree had uncommitted
# changes), when and how long, beside its reports: summary.mjs prints them
commit=$(git rev-parse --short HEAD)
if [ -n "$(git status --porcelain -- src test stryker.config.mjs)" ]; then commit="$commit+changes"; fi
declare -A FILE=([engine]=src/engine/engine.ts [or-set]=src/crdt/or-set.ts [heads]=src/crdt/heads.ts [walker]=src/engine/walker.ts [write-set]=src/crdt/write-set.ts)
for spec in "${modules[@]}"; do
  m=${spec%%@*}
  lines=""
  [[ "$spec" == *@* ]] && lines=${spec#*@}
  out="reports/mutation/$m${lines:+-$lines}"
  echo "=== $m${lines:+ lines $lines}: $(date -u +%H:%M:%S) UTC"
  start=$(date +%s)
  if [ -n "$lines" ]; then
    if [ -z "${FILE[$m]:-}" ]; then echo "=== $m: line ranges need a one-file module"; continue; fi
    MUTATION_MODULE=$m MUTATION_REPORTS=$out PROPERTY_RUNS=10 npx stryker run --mutate "${FILE[$m]}:$lines" || echo "=== $m: stryker exited $?"
  else
    MUTATION_MODULE=$m PROPERTY_RUNS=10 npx stryker run || echo "=== $m: stryker exited $?"
  fi
  mkdir -p "$out"
  printf '{"commit":"%s","date":"%s","minutes":%d%s}\n' "$commit" "$(date -u +%F)" $(( ($(date +%s) - start + 30) / 60 )) "${lines:+,\"lines\":\"$lines\"}" > "$out/run.json"
done
node test/mutation/summary.mjs
