/**
 * Peer benchmark: @orbitdb/core 4.0.0, a keyvalue database, on Helia 7 /
 * libp2p 3 over TCP on 127.0.0.1, LevelDB in temp dirs. OrbitDB writes one
 * signed log entry per put (~100–150 puts/s), so the sizes are small:
 *
 * - batched writes: OrbitDB has no batch API (recorded as such)
 * - unbatched puts: 1,000 (200 --quick)
 * - listing: `db.all()` over the keys of the unbatched run
 * - replication A→B of 1,000 puts (200 --quick) while B has the database open
 * - deep catch-up: 1,000 puts (200 --quick) on A, then a fresh B opens it
 *
 * B runs in a child process (replica-child.mjs); its peak RSS is reported.
 *
 *   npm install --prefix benchmarks/peers/orbitdb
 *   node benchmarks/peers/orbitdb/index.mjs [--quick] [--out file.json]
 */

import { fileURLToPath } from 'node:url'
import { forkReplica } from '../../lib/child.mjs'
import { MB, attempt, keyName, main, makeValues, now, rate, round, tempDir, waitFor, withTempStore } from '../../lib/common.mjs'
import { orbitPeer } from './replica.mjs'

const CHILD = fileURLToPath(new URL('./replica-child.mjs', import.meta.url))
const PEER = '@orbitdb/core'

async function withPeer (label, fn) {
  return withTempStore(`orbit-${label}`, orbitPeer, fn)
}

async function putAll (db, count, values) {
  for (let i = 0; i < count; i++) await db.put(keyName(i), values[i])
}

export async function run ({ quick = false } = {}) {
  const count = quick ? 200 : 1_000
  const values = makeValues(count)
  const out = [{ name: 'batched writes (1,000/batch)', value: null, unit: 'keys/s', error: 'OrbitDB 4 has no batch API: every put is its own log entry' }]

  out.push(...await attempt('unbatched puts', 'puts/s', () => withPeer('puts', async peer => {
    const db = await peer.orbitdb.open(`bench-puts-${process.pid}`, { type: 'keyvalue' })
    let t0 = now()
    await putAll(db, count, values)
    const puts = rate(count, now() - t0)
    t0 = now()
    const all = await db.all()
    const list = rate(all.length, now() - t0)
    await db.close()
    if (all.length !== count) throw new Error(`db.all() returned ${all.length} of ${count} keys`)
    return [
      { name: 'unbatched puts', value: round(puts), unit: 'puts/s', note: `${count} puts (keyvalue db)` },
      { name: 'listing: query() keys+values', value: round(list), unit: 'keys/s', note: `db.all() over ${count} keys` }
    ]
  })))

  for (const mode of ['replication', 'catch-up']) {
    const name = mode === 'replication' ? 'replication A→B, single puts' : 'deep catch-up rate'
    const rssName = mode === 'replication' ? 'peak RSS, replicating B' : 'peak RSS, catching-up B'
    out.push(...await attempt(name, 'keys/s', () => withPeer(`${mode}-a`, async a => {
      const db = await a.orbitdb.open(`bench-${mode}-${process.pid}`, { type: 'keyvalue' })
      if (mode === 'catch-up') await putAll(db, count, values)
      const bDir = await tempDir(`orbit-${mode}-b`)
      const b = forkReplica(CHILD, {
        cmd: 'start',
        dir: bDir.dir,
        topic: db.address,
        dial: a.addr,
        expected: count,
        timeoutMs: quick ? 90_000 : 240_000,
        init: { address: db.address, waitForGo: mode === 'replication' }
      })
      try {
        if (mode === 'replication') {
          await b.ready
          await waitFor(() => a.libp2p.services.pubsub.getSubscribers(db.address).length > 0, 20_000, 'B to subscribe')
          b.go()
          await putAll(db, count, values)
        }
        // B's clock: from 'go' (or its dial) until it counted every entry (lib/child-runner.mjs)
        const done = await b.done
        const ms = done.ms
        const rss = { name: rssName, value: done.rss == null ? null : round(done.rss.hwm / MB), unit: 'MB', note: `${count} entries` }
        if (done.error != null) return [{ name, value: null, unit: 'keys/s', error: done.error }, rss]
        return [{ name, value: round(rate(count, ms)), unit: 'keys/s', note: `${count} entries, ${round(ms / 1000, 1)} s until B had all` }, rss]
      } finally {
        await b.close()
        await db.close().catch(() => {})
        await bDir.cleanup()
      }
    })))
  }

  return out.map(r => ({ ...r, peer: PEER, name: `${PEER}: ${r.name}` }))
}

main(import.meta.url, run)
