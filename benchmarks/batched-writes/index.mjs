/**
 * Batched local writes: 100k keys (10k with --quick) with 100-byte values,
 * written through `store.batch()` 1,000 keys per batch (one DAG node each),
 * on LevelDB. The baseline is raw datastore-level batches of the same keys
 * and values, 1,000 per batch, measured in the same run. Each side runs
 * `rounds` times, alternating, in fresh temp dirs; the best round counts.
 */

import { main, makeValues, now, rate, round, withRatio } from '../lib/common.mjs'
import { crdtLevel, makeKeys, rawLevel, writeBatches } from '../lib/stores.mjs'

export const BATCH_SIZE = 1000

export async function run ({ quick = false } = {}) {
  const count = quick ? 10_000 : 100_000
  const rounds = quick ? 1 : 2
  const keys = makeKeys(count)
  const values = makeValues(count)
  let bestRaw = 0
  let bestCrdt = 0

  for (let r = 0; r < rounds; r++) {
    const raw = await rawLevel('raw-batch')
    try {
      const t0 = now()
      await writeBatches(raw.datastore, keys, values, BATCH_SIZE)
      bestRaw = Math.max(bestRaw, rate(count, now() - t0))
    } finally {
      await raw.close()
    }

    const crdt = await crdtLevel('crdt-batch')
    try {
      const t0 = now()
      await writeBatches(crdt.store, keys, values, BATCH_SIZE)
      bestCrdt = Math.max(bestCrdt, rate(count, now() - t0))
      // sanity: the last key is readable
      await crdt.store.get(keys[count - 1])
    } finally {
      await crdt.close()
    }
  }

  return [
    withRatio({ name: 'batched writes (1,000/batch)', value: round(bestCrdt), unit: 'keys/s', note: `${count} keys x 100 B, best of ${rounds}; baseline = raw datastore-level batches` }, bestRaw)
  ]
}

main(import.meta.url, run)
