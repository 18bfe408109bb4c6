/**
 * Unbatched puts: `store.put()` one key at a time, each making its own DAG
 * node (10k puts, 1k with --quick, 100-byte values), on an offline CRDT
 * datastore over LevelDB. Also measured on a networked replica (Helia,
 * libp2p TCP, gossipsub announcing every put, no peer connected), the
 * configuration the replication benchmarks write with.
 */

import { main, makeValues, now, rate, round } from '../lib/common.mjs'
import { crdtLevel, heliaReplica, makeKeys } from '../lib/stores.mjs'

export async function run ({ quick = false } = {}) {
  const count = quick ? 1_000 : 10_000
  const keys = makeKeys(count)
  const values = makeValues(count)

  const crdt = await crdtLevel('crdt-puts')
  let offline
  try {
    const t0 = now()
    for (let i = 0; i < count; i++) await crdt.store.put(keys[i], values[i])
    offline = rate(count, now() - t0)
  } finally {
    await crdt.close()
  }

  const replica = await heliaReplica('helia-puts', `bench-puts-${process.pid}`)
  const helia = Math.min(count, quick ? 1_000 : 3_000)
  let networked
  try {
    const t0 = now()
    for (let i = 0; i < helia; i++) await replica.store.put(keys[i], values[i])
    networked = rate(helia, now() - t0)
  } finally {
    await replica.close()
  }

  return [
    { name: 'unbatched puts', value: round(offline), unit: 'puts/s', note: `${count} puts, one DAG node each; offline store on LevelDB` },
    { name: 'unbatched puts, Helia replica', value: round(networked), unit: 'puts/s', note: `${helia} puts; blocks in Helia's blockstore, each put announced over gossipsub` }
  ]
}

main(import.meta.url, run)
