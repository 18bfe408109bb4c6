/**
 * Catch-up of a deep DAG: 10k single-put nodes (1k with --quick) written on
 * A, a chain 10k nodes deep; then a fresh replica B (child process, LevelDB
 * in a temp dir) dials A over TCP on 127.0.0.1. The clock runs from B's
 * dial until B holds every key, so it includes the dial, gossipsub's
 * subscription exchange and A's announcement of its heads to the replica
 * that joined. B's peak RSS, CPU time and timeline are reported too.
 *
 * Run twice: with the block-sync protocol (the default of createHeliaCRDT)
 * and with bitswap only (`syncProtocol: false` on both replicas).
 * CATCHUP_COUNT=<n> overrides the chain length (e.g. 100000);
 * CATCHUP_ONLY=protocol|bitswap runs one of the two.
 *
 * A full run (not --quick) also catches up a 100k-node chain with the
 * protocol (issue #15's "100k nodes in <= 30 s"): ~2-4 min more, mostly A
 * writing it; CATCHUP_DEEP=0 skips it, CATCHUP_DEEP=<n> sets its length.
 *
 * Every run also catches up a wide DAG: 10 writers × 1,000 concurrent
 * nodes, written by 10 offline replicas, whose blocks A imports and merges;
 * B then catches up A's 10 branches, with the protocol only (issue #15: at
 * the chain's rate); 10 × 100 with --quick. CATCHUP_WIDE=0 skips it,
 * CATCHUP_ONLY=wide runs it alone.
 */

import { fileURLToPath } from 'node:url'
import { forkReplica } from '../lib/child.mjs'
import { MB, describeMemory, main, makeValues, now, rate, round, tempDir, waitFor } from '../lib/common.mjs'
import { heliaReplica, makeKeys } from '../lib/stores.mjs'

const CHILD = fileURLToPath(new URL('../lib/replica-child.mjs', import.meta.url))

/** Writes `count` single puts on A: a chain */
async function writeChain (a, count) {
  const keys = makeKeys(count)
  const values = makeValues(count)
  for (let i = 0; i < count; i++) await a.store.put(keys[i], values[i])
}

/**
 * Writes `writers` × `per` single puts on offline replicas (one chain each,
 * all concurrent), then has A import their blocks and merge their heads:
 * A ends with a DAG `writers` wide
 */
async function writeWide (a, writers, per) {
  const { createCRDTDatastore, encodeBroadcast } = await import('../../dist/src/index.js')
  const { MemoryBlockstore } = await import('blockstore-core')
  const { MemoryDatastore } = await import('datastore-core')
  const keys = makeKeys(writers * per)
  const values = makeValues(writers * per)
  const heads = []
  for (let w = 0; w < writers; w++) {
    const blocks = new MemoryBlockstore()
    const store = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore: blocks }, { repairInterval: 0 })
    for (let i = 0; i < per; i++) await store.put(keys[w * per + i], values[w * per + i])
    heads.push(...store.heads().map(h => ({ cid: h.cid, dagName: h.dagName })))
    await store.stop()
    for await (const { cid, bytes } of blocks.getAll()) {
      const chunks = []
      for await (const c of bytes) chunks.push(c)
      await a.node.blockstore.put(cid, chunks[0])
    }
  }
  await a.store.receive(encodeBroadcast(heads))
  await waitFor(async () => (await a.store.stats()).heads.length === writers && (await a.store.stats()).queuedJobs === 0, 600_000, 'A to merge the wide DAG', 200)
}

async function catchUp ({ count, label, crdt, timeoutMs, wide }) {
  const topic = `bench-catch-up-${process.pid}-${label}`
  const a = await heliaReplica(`catchup-a-${label}`, topic, crdt)
  const bDir = await tempDir(`catchup-b-${label}`)
  const suffix = wide != null
    ? `, wide DAG ${wide.writers}×${wide.per}, sync protocol`
    : label === 'deep' ? `, ${count / 1000}k chain, sync protocol` : label === 'protocol' ? ', sync protocol' : ', bitswap only'
  let b
  try {
    const t0 = now()
    if (wide != null) await writeWide(a, wide.writers, wide.per)
    else await writeChain(a, count)
    const writeMs = now() - t0
    b = forkReplica(CHILD, { cmd: 'start', dir: bDir.dir, topic, dial: a.addr, expected: count, timeoutMs, init: { crdt } })
    const done = await b.done
    const note = wide != null
      ? `${count} nodes in ${wide.writers} concurrent branches, one key each`
      : `${count} nodes, one key each (A put them at ${round(rate(count, writeMs))}/s)`
    if (done.error != null) {
      return [
        { name: `deep catch-up${suffix}`, value: null, unit: 'keys/s', error: done.error, note },
        { name: `peak RSS, catching-up B${suffix}`, value: done.rss == null ? null : round(done.rss.hwm / MB), unit: 'MB' }
      ]
    }
    const sync = done.stats?.sync
    const via = sync == null ? '' : `; ${sync.blocks} blocks by ${sync.requests} streams, ${sync.fallbacks} by bitswap, ${sync.handedOver} handed to the merge decoded`
    const tl = done.timeline
    const timeline = tl == null ? '' : `; ms from the dial: connected ${tl.dialled}, subscribed ${tl.subscribed}, first key ${tl.firstKey}, all keys ${tl.allKeys}; B's CPU ${round(done.cpuMs / 1000, 1)} s`
    return [
      { name: `deep catch-up${suffix}`, value: round(done.ms / 1000, 1), unit: 's', note: `${note}; from B's dial to all keys on B${via}${timeline}` },
      { name: `deep catch-up rate${suffix}`, value: round(rate(count, done.ms)), unit: 'keys/s', note: wide != null ? 'one DAG node per key' : `one DAG node per key; A's own single-put rate ${round(rate(count, writeMs))}/s` },
      { name: `peak RSS, catching-up B${suffix}`, value: round(done.rss.hwm / MB), unit: 'MB', note: `VmHWM of the child process; idle (connected, nothing synced) ${done.rss.idle == null ? '?' : round(done.rss.idle / MB)} MB; largest 100 ms sample ${round(done.rss.sampled / MB)} MB; ${describeMemory(done.rss.atPeak)}` }
    ]
  } finally {
    await b?.close()
    await a.close()
    await bDir.cleanup()
  }
}

export async function run ({ quick = false } = {}) {
  const count = Number(process.env.CATCHUP_COUNT ?? (quick ? 1_000 : 10_000))
  const timeoutMs = quick ? 120_000 : 900_000
  const only = process.env.CATCHUP_ONLY
  const rows = []
  // CATCHUP_ONLY=deep: only the 100k chain
  if (only == null || only === 'protocol') rows.push(...await catchUp({ count, label: 'protocol', crdt: {}, timeoutMs }))
  if (only == null || only === 'bitswap') rows.push(...await catchUp({ count, label: 'bitswap', crdt: { syncProtocol: false }, timeoutMs }))
  const deep = Number(process.env.CATCHUP_DEEP ?? 100_000)
  if (!quick && deep > 0 && (only == null || only === 'deep')) rows.push(...await catchUp({ count: deep, label: 'deep', crdt: {}, timeoutMs }))
  // the wide DAG (10 × 100 with --quick); CATCHUP_WIDE=0 skips it
  if (process.env.CATCHUP_WIDE !== '0' && (only == null || only === 'wide')) {
    const wide = { writers: 10, per: quick ? 100 : 1_000 }
    rows.push(...await catchUp({ count: wide.writers * wide.per, label: 'wide', crdt: {}, timeoutMs, wide }))
  }
  return rows
}

main(import.meta.url, run)
