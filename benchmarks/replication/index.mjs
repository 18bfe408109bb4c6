/**
 * Replication A→B over libp2p TCP on 127.0.0.1, LevelDB on both sides.
 *
 * - batched: 100k keys (10k with --quick) written on A in batches of 1,000
 *   (100 DAG nodes) while B listens; the clock runs from A's first write
 *   until B holds every key. B's peak RSS is reported.
 * - single puts: 1,000 keys (200 with --quick) written on A one put (one
 *   DAG node, one broadcast) at a time while B listens: the workload the
 *   peers (OrbitDB, js-ds-crdt) are compared on.
 *
 * B runs in a child process (lib/replica-child.mjs) so its RSS is its own.
 */

import { fileURLToPath } from 'node:url'
import { forkReplica } from '../lib/child.mjs'
import { MB, describeMemory, main, makeValues, now, rate, round, tempDir, waitFor } from '../lib/common.mjs'
import { heliaReplica, makeKeys, writeBatches } from '../lib/stores.mjs'

const CHILD = fileURLToPath(new URL('../lib/replica-child.mjs', import.meta.url))
export const BATCH_SIZE = 1000

/** Writes `count` keys on A (batches of `batchSize`, or single puts when 1) while B listens */
export async function replicate ({ count, batchSize, timeoutMs, label, crdt }) {
  const topic = `bench-${label}-${process.pid}`
  const keys = makeKeys(count)
  const values = makeValues(count)
  const a = await heliaReplica(`${label}-a`, topic)
  const bDir = await tempDir(`${label}-b`)
  const b = forkReplica(CHILD, { cmd: 'start', dir: bDir.dir, topic, dial: a.addr, expected: count, timeoutMs, init: { waitForGo: true, crdt } })
  try {
    await b.ready
    await waitFor(() => a.node.libp2p.services.pubsub.getSubscribers(topic).length > 0, 20_000, 'B to subscribe')
    b.go()
    const t0 = now()
    // A's CPU (this process, all threads) while it writes
    const cpu0 = process.cpuUsage()
    if (batchSize > 1) {
      await writeBatches(a.store, keys, values, batchSize)
    } else {
      for (let i = 0; i < count; i++) await a.store.put(keys[i], values[i])
    }
    const writeMs = now() - t0
    const cpu = process.cpuUsage(cpu0)
    // done.ms is B's clock: from 'go' until its events counted every key (the listing that confirms them is not timed)
    const done = await b.done
    return { ...done, writeMs, writeCpuMs: (cpu.user + cpu.system) / 1000 }
  } finally {
    await b.close()
    await a.close()
    await bDir.cleanup()
  }
}

export async function run ({ quick = false } = {}) {
  const out = []
  const count = quick ? 10_000 : 100_000
  const batched = await replicate({ count, batchSize: BATCH_SIZE, timeoutMs: quick ? 120_000 : 300_000, label: 'repl' })
  const note = `${count} keys in ${count / BATCH_SIZE} batches; A wrote them in ${round(batched.writeMs / 1000, 1)} s`
  if (batched.error != null) {
    out.push({ name: 'replication A→B (TCP)', value: null, unit: 'keys/s', error: batched.error, note })
  } else {
    out.push({ name: 'replication A→B (TCP)', value: round(rate(count, batched.ms)), unit: 'keys/s', note: `${note}; ${round(batched.ms / 1000, 1)} s end to end` })
  }
  out.push({ name: 'peak RSS, replicating B', value: batched.rss == null ? null : round(batched.rss.hwm / MB), unit: 'MB', note: batched.rss == null ? undefined : `VmHWM of B's process; largest 100 ms sample ${round(batched.rss.sampled / MB)} MB; ${describeMemory(batched.rss.atPeak)}` })

  const singles = quick ? 200 : 1_000
  const single = await replicate({ count: singles, batchSize: 1, timeoutMs: quick ? 60_000 : 180_000, label: 'repl1' })
  if (single.error != null) {
    out.push({ name: 'replication A→B, single puts', value: null, unit: 'keys/s', error: single.error })
  } else {
    out.push({ name: 'replication A→B, single puts', value: round(rate(singles, single.ms)), unit: 'keys/s', note: `${singles} puts (one DAG node each) on A, ${round(single.ms / 1000, 1)} s until B had all; A put at ${round(rate(singles, single.writeMs))}/s` })
  }
  out.push({ name: 'peak RSS, replicating B (single puts)', value: single.rss == null ? null : round(single.rss.hwm / MB), unit: 'MB', note: `${singles} single puts` })

  // the same with multiHeadProcessing: broadcasts handled concurrently
  const multi = await replicate({ count: singles, batchSize: 1, timeoutMs: quick ? 60_000 : 180_000, label: 'repl1m', crdt: { multiHeadProcessing: true } })
  out.push(multi.error != null
    ? { name: 'replication A→B, single puts, multiHeadProcessing', value: null, unit: 'keys/s', error: multi.error }
    : { name: 'replication A→B, single puts, multiHeadProcessing', value: round(rate(singles, multi.ms)), unit: 'keys/s', note: `as above with multiHeadProcessing: true on B (default false, as in go-ds-crdt)` })
  return out
}

main(import.meta.url, run)
