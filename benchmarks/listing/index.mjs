/**
 * Listing: `query({})` over 1M keys (100k with --quick) with 100-byte
 * values, reading keys and values, on a CRDT datastore over LevelDB. The
 * baseline is `query({})` on a raw datastore-level store holding the same
 * keys and values, measured in the same run. Loading the stores is not
 * timed; each query runs twice, alternating, and the best run counts.
 */

import { main, makeValues, now, rate, round, withRatio } from '../lib/common.mjs'
import { crdtLevel, makeKeys, rawLevel, writeBatches } from '../lib/stores.mjs'

async function timeQuery (store, expected) {
  const t0 = now()
  let n = 0
  let bytes = 0
  for await (const { value } of store.query({})) {
    n++
    bytes += value.byteLength
  }
  const ms = now() - t0
  if (n !== expected) throw new Error(`query returned ${n} entries, expected ${expected}`)
  if (bytes !== expected * 100) throw new Error(`query returned ${bytes} value bytes, expected ${expected * 100}`)
  return rate(n, ms)
}

export async function run ({ quick = false } = {}) {
  const count = quick ? 100_000 : 1_000_000
  const chunk = 100_000
  const raw = await rawLevel('raw-list')
  const crdt = await crdtLevel('crdt-list')
  try {
    const t0 = now()
    // load in chunks so only one chunk's keys and values are in memory at a time
    for (let i = 0; i < count; i += chunk) {
      const n = Math.min(chunk, count - i)
      const keys = makeKeys(n, i)
      const values = makeValues(n)
      await writeBatches(raw.datastore, keys, values, 1000)
      await writeBatches(crdt.store, keys, values, 1000)
    }
    const loadMs = now() - t0
    let bestRaw = 0
    let bestCrdt = 0
    for (let r = 0; r < 2; r++) {
      bestRaw = Math.max(bestRaw, await timeQuery(raw.datastore, count))
      bestCrdt = Math.max(bestCrdt, await timeQuery(crdt.store, count))
    }
    return [
      withRatio({ name: 'listing: query() keys+values', value: round(bestCrdt), unit: 'keys/s', note: `${count} keys, best of 2; baseline = raw datastore-level query(); loading both took ${round(loadMs / 1000)} s` }, bestRaw)
    ]
  } finally {
    await raw.close()
    await crdt.close()
  }
}

main(import.meta.url, run)
