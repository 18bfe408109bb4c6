#!/usr/bin/env bash
# Smoke test for go-crdt-replica: two go-ds-crdt replicas talking over
# loopback libp2p (gossipsub heads + bitswap blocks), driven through the JSON
# line protocol over fifos. Bounded in time; exits non-zero on failure and
# kills every process it started.
#
# Usage: test/interop/go/smoke.sh            (builds the binary if missing)
#        GO_CRDT_REPLICA=/path/to/bin smoke.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
BIN="${GO_CRDT_REPLICA:-$ROOT/.cache/interop/go-crdt-replica}"
STEP_TIMEOUT=${STEP_TIMEOUT:-90}   # seconds to wait for one response line
PROC_TIMEOUT=${PROC_TIMEOUT:-240}  # hard cap on each replica's lifetime
TOTAL_TIMEOUT=${TOTAL_TIMEOUT:-300}

# The whole script runs under timeout(1): on expiry it gets SIGTERM, and the
# EXIT trap below stops the replicas.
if [[ -z "${GO_CRDT_SMOKE_TIMED:-}" ]]; then
  GO_CRDT_SMOKE_TIMED=1 exec timeout -k 10 "$TOTAL_TIMEOUT" bash "$0" "$@"
fi

if [[ ! -x "$BIN" ]]; then
  echo "building $BIN" >&2
  (cd "$HERE" && go build -o "$BIN" .)
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/go-crdt-smoke.XXXXXX")"
declare -A PID IN OUT READY

cleanup() {
  local rc=$?
  set +e
  local n
  for n in "${!IN[@]}"; do eval "exec ${IN[$n]}>&-" 2>/dev/null; done
  for n in "${!OUT[@]}"; do eval "exec ${OUT[$n]}<&-" 2>/dev/null; done
  for n in "${!PID[@]}"; do
    # stdin was closed above => the replica quits on EOF; give it a moment,
    # then SIGTERM (timeout forwards it; the replica treats it as quit),
    # then SIGKILL.
    waitpid_for "${PID[$n]}" 10 || { kill -TERM "${PID[$n]}" 2>/dev/null; waitpid_for "${PID[$n]}" 10; } \
      || kill -KILL "${PID[$n]}" 2>/dev/null
  done
  wait 2>/dev/null
  if [[ $rc -ne 0 ]]; then
    for f in "$WORK"/*.err; do
      [[ -s "$f" ]] && { echo "--- $(basename "$f")" >&2; tail -n 30 "$f" >&2; }
    done
  fi
  rm -rf "$WORK"
  exit $rc
}
# waitpid_for PID TENTHS: true once PID is gone (checked every 0.2s)
waitpid_for() {
  local i
  for ((i = 0; i < $2; i += 2)); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.2
  done
  ! kill -0 "$1" 2>/dev/null
}
trap cleanup EXIT
trap 'echo "FAIL: interrupted/timed out" >&2; exit 124' TERM INT

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok - $*"; }

# start NAME [extra flags...]
start() {
  local n=$1; shift
  mkfifo "$WORK/$n.in" "$WORK/$n.out"
  timeout -k 5 "$PROC_TIMEOUT" "$BIN" "$@" <"$WORK/$n.in" >"$WORK/$n.out" 2>>"$WORK/$n.err" &
  PID[$n]=$!
  local fdi fdo
  exec {fdi}>"$WORK/$n.in"
  exec {fdo}<"$WORK/$n.out"
  IN[$n]=$fdi
  OUT[$n]=$fdo
  local line
  read -r -t "$STEP_TIMEOUT" -u "$fdo" line || fail "$n: no ready line"
  [[ $line == '{"event":"ready"'* ]] || fail "$n: bad ready line: $line"
  READY[$n]=$line
}

# stop NAME: send quit, expect {"ok":true} and exit status 0.
stop() {
  local n=$1 resp rc=0
  resp=$(rpc "$n" '{"cmd":"quit"}')
  [[ $resp == '{"ok":true}' ]] || fail "$n quit: $resp"
  eval "exec ${IN[$n]}>&- ${OUT[$n]}<&-"
  wait "${PID[$n]}" || rc=$?
  [[ $rc -eq 0 ]] || fail "$n exited with $rc"
  unset "IN[$n]" "OUT[$n]" "PID[$n]"
  rm -f "$WORK/$n.in" "$WORK/$n.out"
}

# rpc NAME JSON -> prints the single response line
rpc() {
  local n=$1 req=$2 line
  printf '%s\n' "$req" >&"${IN[$n]}"
  read -r -t "$STEP_TIMEOUT" -u "${OUT[$n]}" line || fail "$n: no response to $req"
  printf '%s\n' "$line"
}

# expect_ok NAME JSON -> response must start with {"ok":true
expect_ok() {
  local resp
  resp=$(rpc "$1" "$2")
  [[ $resp == '{"ok":true'* ]] || fail "$1 $2 -> $resp"
  printf '%s\n' "$resp"
}

hex() { printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'; }
addr_of() { [[ ${READY[$1]} =~ \"addrs\":\[\"([^\"]+)\" ]] && printf '%s' "${BASH_REMATCH[1]}"; }
id_of() { [[ ${READY[$1]} =~ \"peerId\":\"([^\"]+)\" ]] && printf '%s' "${BASH_REMATCH[1]}"; }

# ---------------------------------------------------------------------------
start a
start b
pass "two replicas ready"

# Wire vector: put("/hello","world") on an empty store.
HELLO_CID=bafybeidsfjpejlb67ieikrewsjvlxd3giucznszgdcb6qhclkyk2hvonta
HELLO_BLOCK=0a130a0f0a062f68656c6c6f1a05776f726c641801
expect_ok a "{\"cmd\":\"put\",\"key\":\"/hello\",\"value\":\"$(hex world)\"}" >/dev/null
r=$(expect_ok a '{"cmd":"heads"}')
[[ $r == "{\"ok\":true,\"heads\":[{\"cid\":\"$HELLO_CID\",\"height\":1,\"dagName\":\"\"}],\"maxHeight\":1}" ]] \
  || fail "heads after first put: $r"
r=$(expect_ok a "{\"cmd\":\"block\",\"cid\":\"$HELLO_CID\"}")
[[ $r == "{\"ok\":true,\"hex\":\"$HELLO_BLOCK\"}" ]] || fail "block bytes: $r"
pass "put(/hello,world) -> $HELLO_CID, block $HELLO_BLOCK"

expect_ok b "{\"cmd\":\"connect\",\"addr\":\"$(addr_of a)\"}" >/dev/null
r=$(expect_ok b '{"cmd":"peers"}')
[[ $r == *"\"$(id_of a)\""* ]] || fail "b peers: $r"
pass "b connected to a"

expect_ok b "{\"cmd\":\"wait\",\"key\":\"/hello\",\"value\":\"$(hex world)\",\"timeoutMs\":20000}" >/dev/null
r=$(expect_ok b '{"cmd":"get","key":"/hello"}')
[[ $r == "{\"ok\":true,\"found\":true,\"value\":\"$(hex world)\"}" ]] || fail "b get /hello: $r"
pass "b received /hello (gossipsub head + bitswap block)"

r=$(expect_ok a '{"cmd":"bulk","prefix":"/bulk/","count":200,"batchSize":1}')
pass "a bulk 200 single puts: $r"
r=$(expect_ok b '{"cmd":"waitCount","prefix":"/bulk/","count":200,"timeoutMs":60000}')
[[ $r == '{"ok":true,"count":200}' ]] || fail "b waitCount: $r"
r=$(expect_ok b '{"cmd":"get","key":"/bulk/199"}')
[[ $r == "{\"ok\":true,\"found\":true,\"value\":\"$(hex v199)\"}" ]] || fail "b get /bulk/199: $r"
pass "b has all 200 bulk keys"

expect_ok b "{\"cmd\":\"batch\",\"ops\":[{\"op\":\"put\",\"key\":\"/batch/x\",\"value\":\"$(hex one)\"},{\"op\":\"put\",\"key\":\"/batch/y\",\"value\":\"$(hex two)\"},{\"op\":\"delete\",\"key\":\"/bulk/0\"}]}" >/dev/null
expect_ok a "{\"cmd\":\"wait\",\"key\":\"/batch/y\",\"value\":\"$(hex two)\",\"timeoutMs\":20000}" >/dev/null
expect_ok a '{"cmd":"wait","key":"/bulk/0","absent":true,"timeoutMs":20000}' >/dev/null
r=$(expect_ok a '{"cmd":"list","prefix":"/batch/"}')
[[ $r == "{\"ok\":true,\"entries\":[[\"/batch/x\",\"$(hex one)\"],[\"/batch/y\",\"$(hex two)\"]]}" ]] || fail "a list /batch/: $r"
pass "batch (2 puts + 1 delete) from b applied on a"

expect_ok a '{"cmd":"delete","key":"/hello"}' >/dev/null
expect_ok b '{"cmd":"wait","key":"/hello","absent":true,"timeoutMs":20000}' >/dev/null
pass "delete from a applied on b"

r=$(expect_ok b '{"cmd":"bulk","prefix":"/bb/","count":100,"batchSize":25,"valuePrefix":"w"}')
expect_ok a '{"cmd":"waitCount","prefix":"/bb/","count":100,"timeoutMs":60000}' >/dev/null
r=$(expect_ok a '{"cmd":"get","key":"/bb/42"}')
[[ $r == *"\"value\":\"$(hex w42)\""* ]] || fail "a get /bb/42: $r"
pass "bulk 100 in batches of 25 from b applied on a"

# Named DAGs do not exist in go-ds-crdt v0.6.8: must be refused, not ignored.
r=$(rpc a "{\"cmd\":\"put\",\"key\":\"/named\",\"value\":\"$(hex n)\",\"dagName\":\"tenant-1\"}")
[[ $r == '{"ok":false,"error":"named DAGs'* ]] || fail "named DAG put: $r"
r=$(rpc a '{"cmd":"purge","dagName":"tenant-1"}')
[[ $r == '{"ok":false,'* ]] || fail "purge: $r"
r=$(rpc a '{"cmd":"wait","key":"/never","timeoutMs":100}')
[[ $r == '{"ok":false,"error":"timeout"}' ]] || fail "wait timeout: $r"
r=$(rpc a '{"cmd":"nope"}')
[[ $r == '{"ok":false,'* ]] || fail "unknown cmd: $r"
pass "dagName/purge refused (v0.6.8), timeout and unknown-command errors"

# Both replicas converge to the same heads.
for _ in $(seq 1 100); do
  ha=$(expect_ok a '{"cmd":"heads"}'); hb=$(expect_ok b '{"cmd":"heads"}')
  [[ $ha == "$hb" ]] && break
  sleep 0.1
done
[[ $ha == "$hb" ]] || fail "heads differ: a=$ha b=$hb"
la=$(expect_ok a '{"cmd":"list"}'); lb=$(expect_ok b '{"cmd":"list"}')
[[ $la == "$lb" ]] || fail "lists differ"
pass "heads and contents converged: $ha"

stop b
stop a
pass "quit -> exit 0"

# On-disk datastore survives a restart.
start c -data "$WORK/c-data"
expect_ok c "{\"cmd\":\"put\",\"key\":\"/persist\",\"value\":\"$(hex yes)\"}" >/dev/null
stop c
start c -data "$WORK/c-data"
r=$(expect_ok c '{"cmd":"get","key":"/persist"}')
[[ $r == "{\"ok\":true,\"found\":true,\"value\":\"$(hex yes)\"}" ]] || fail "persisted get: $r"
stop c
pass "-data (leveldb) persists across restarts"

echo "smoke: all passed"
