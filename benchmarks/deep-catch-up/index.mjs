/**
 * Catch-up of a deep DAG: 10k single-put nodes (1k with --quick) written on
 * A, a chain 10k nodes deep; then a fresh replica B (child process, LevelDB
 * in a temp dir) dials A over TCP on 127.0.0.1. The clock runs from B's
 * dial until B holds every key, so it includes waiting for A's next
 * rebroadcast (rebroadcastInterval 1 s ±30%). B's peak RSS is reported too.
 */

import { fileURLToPath } from 'node:url'
import { forkReplica } from '../lib/child.mjs'
import { MB, describeMemory, main, makeValues, now, rate, round, tempDir } from '../lib/common.mjs'
import { heliaReplica, makeKeys } from '../lib/stores.mjs'

const CHILD = fileURLToPath(new URL('../lib/replica-child.mjs', import.meta.url))

export async function run ({ quick = false } = {}) {
  const count = quick ? 1_000 : 10_000
  const timeoutMs = quick ? 120_000 : 600_000
  const topic = `bench-catch-up-${process.pid}`
  const keys = makeKeys(count)
  const values = makeValues(count)
  const a = await heliaReplica('catchup-a', topic)
  const bDir = await tempDir('catchup-b')
  let b
  try {
    const t0 = now()
    for (let i = 0; i < count; i++) await a.store.put(keys[i], values[i])
    const writeMs = now() - t0
    b = forkReplica(CHILD, { cmd: 'start', dir: bDir.dir, topic, dial: a.addr, expected: count, timeoutMs })
    const done = await b.done
    const note = `${count} nodes, one key each (A put them at ${round(rate(count, writeMs))}/s)`
    if (done.error != null) {
      return [
        { name: 'deep catch-up', value: null, unit: 'keys/s', error: done.error, note },
        { name: 'peak RSS, catching-up B', value: done.rss == null ? null : round(done.rss.hwm / MB), unit: 'MB' }
      ]
    }
    return [
      { name: 'deep catch-up', value: round(done.ms / 1000, 1), unit: 's', note: `${note}; from B's dial to all keys on B` },
      { name: 'deep catch-up rate', value: round(rate(count, done.ms)), unit: 'keys/s', note: 'one DAG node per key' },
      { name: 'peak RSS, catching-up B', value: round(done.rss.hwm / MB), unit: 'MB', note: `VmHWM of the child process; largest 100 ms sample ${round(done.rss.sampled / MB)} MB; ${describeMemory(done.rss.atPeak)}` }
    ]
  } finally {
    await b?.close()
    await a.close()
    await bDir.cleanup()
  }
}

main(import.meta.url, run)
