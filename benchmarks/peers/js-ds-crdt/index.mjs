/**
 * Peer benchmark: js-ds-crdt 0.0.33 (an earlier TypeScript port of
 * go-ds-crdt, on Helia 4 / libp2p 1), on this machine, LevelDB in temp dirs,
 * TCP on 127.0.0.1, the same workloads as datastore-crdt's benchmarks at
 * smaller sizes (its writes are ~200 puts/s):
 *
 * - batched writes: 10k keys (2k --quick), 1,000 per `batch()`; checked
 * - unbatched puts: 1,000 (200 --quick)
 * - listing: `query({})` over the keys of the unbatched run
 * - replication A→B of 1,000 single puts (200 --quick) while B listens
 * - deep catch-up: 1,000 single-put nodes (200 --quick), then a fresh B
 *
 * B runs in a child process (replica-child.mjs); its peak RSS is reported.
 *
 *   npm install --prefix benchmarks/peers/js-ds-crdt
 *   node benchmarks/peers/js-ds-crdt/index.mjs [--quick] [--out file.json]
 */

import { fileURLToPath } from 'node:url'
import { install } from './resolve-hook.mjs'
import { forkReplica } from '../../lib/child.mjs'
import { MB, attempt, keyName, main, makeValues, now, rate, round, tempDir, waitFor, withTempStore } from '../../lib/common.mjs'

const CHILD = fileURLToPath(new URL('./replica-child.mjs', import.meta.url))
const PEER = 'js-ds-crdt'

async function withReplica (label, topic, fn) {
  const { jsReplica } = await import('./replica.mjs')
  return withTempStore(`jsds-${label}`, async dir => jsReplica(dir, topic), fn)
}

export async function run ({ quick = false } = {}) {
  install()
  const { Key } = await import('./replica.mjs')
  const keysOf = (n, offset = 0) => Array.from({ length: n }, (_, i) => new Key(keyName(offset + i)))
  const out = []

  // batched writes
  out.push(...await attempt('batched writes (1,000/batch)', 'keys/s', async () => {
    const count = quick ? 2_000 : 10_000
    const keys = keysOf(count)
    const values = makeValues(count)
    return withReplica('batch', `jsds-batch-${process.pid}`, async r => {
      const t0 = now()
      for (let i = 0; i < count; i += 1000) {
        const b = await r.store.batch()
        for (let j = i; j < i + 1000; j++) await b.put(keys[j], values[j])
        await b.commit()
      }
      const ms = now() - t0
      const stored = (await r.store.query({})).length
      if (stored !== count) {
        throw new Error(`batches lost writes: ${stored} of ${count} keys readable after commit() (0.0.33's batch only starts a delta on a delete)`)
      }
      return [{ name: 'batched writes (1,000/batch)', value: round(rate(count, ms)), unit: 'keys/s', note: `${count} keys` }]
    })
  }))

  // unbatched puts + listing
  out.push(...await attempt('unbatched puts', 'puts/s', async () => {
    const count = quick ? 200 : 1_000
    const keys = keysOf(count)
    const values = makeValues(count)
    return withReplica('puts', `jsds-puts-${process.pid}`, async r => {
      let t0 = now()
      for (let i = 0; i < count; i++) await r.store.put(keys[i], values[i])
      const puts = rate(count, now() - t0)
      t0 = now()
      const listed = await r.store.query({})
      const list = rate(listed.length, now() - t0)
      if (listed.length !== count) throw new Error(`query returned ${listed.length} of ${count} keys`)
      return [
        { name: 'unbatched puts', value: round(puts), unit: 'puts/s', note: `${count} puts on a Helia replica` },
        { name: 'listing: query() keys+values', value: round(list), unit: 'keys/s', note: `${count} keys (query() returns an array)` }
      ]
    })
  }))

  // replication of single puts while B listens
  out.push(...await attempt('replication A→B, single puts', 'keys/s', async () => {
    const count = quick ? 200 : 1_000
    const keys = keysOf(count)
    const values = makeValues(count)
    const topic = `jsds-repl-${process.pid}`
    return withReplica('repl-a', topic, async a => {
      const bDir = await tempDir('jsds-repl-b')
      const b = forkReplica(CHILD, { cmd: 'start', dir: bDir.dir, topic, dial: a.addr, expected: count, timeoutMs: quick ? 60_000 : 180_000, init: { waitForGo: true } })
      try {
        await b.ready
        await waitFor(() => a.libp2p.services.pubsub.getSubscribers(topic).length > 0, 20_000, 'B to subscribe')
        b.go()
        for (let i = 0; i < count; i++) await a.store.put(keys[i], values[i])
        const done = await b.done
        // B's clock: from 'go' until its events counted every key (lib/child-runner.mjs)
        const ms = done.ms
        const rss = { name: 'peak RSS, replicating B', value: done.rss == null ? null : round(done.rss.hwm / MB), unit: 'MB', note: `${count} single puts` }
        if (done.error != null) return [{ name: 'replication A→B, single puts', value: null, unit: 'keys/s', error: done.error }, rss]
        return [{ name: 'replication A→B, single puts', value: round(rate(count, ms)), unit: 'keys/s', note: `${count} puts, ${round(ms / 1000, 1)} s until B had all` }, rss]
      } finally {
        await b.close()
        await bDir.cleanup()
      }
    })
  }))

  // deep catch-up
  out.push(...await attempt('deep catch-up rate', 'keys/s', async () => {
    const count = quick ? 200 : 1_000
    const keys = keysOf(count)
    const values = makeValues(count)
    const topic = `jsds-catchup-${process.pid}`
    return withReplica('catchup-a', topic, async a => {
      for (let i = 0; i < count; i++) await a.store.put(keys[i], values[i])
      const bDir = await tempDir('jsds-catchup-b')
      const b = forkReplica(CHILD, { cmd: 'start', dir: bDir.dir, topic, dial: a.addr, expected: count, timeoutMs: quick ? 60_000 : 240_000 })
      try {
        const done = await b.done
        const rss = { name: 'peak RSS, catching-up B', value: done.rss == null ? null : round(done.rss.hwm / MB), unit: 'MB', note: `${count} nodes` }
        if (done.error != null) return [{ name: 'deep catch-up rate', value: null, unit: 'keys/s', error: done.error }, rss]
        return [{ name: 'deep catch-up rate', value: round(rate(count, done.ms)), unit: 'keys/s', note: `${count} single-put nodes, ${round(done.ms / 1000, 1)} s from B's dial` }, rss]
      } finally {
        await b.close()
        await bDir.cleanup()
      }
    })
  }))

  return out.map(r => ({ ...r, peer: PEER, name: `${PEER}: ${r.name}` }))
}

main(import.meta.url, run)
