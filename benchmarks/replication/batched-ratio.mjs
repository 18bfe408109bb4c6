/**
 * A tool, not in `npm run bench`: runs the batched replication of index.mjs
 * (`count` keys, 1,000 per batch; default 100k) and the local batched writes
 * of ../batched-writes (the same keys on a store with no network), `ROUNDS`
 * times (default 3), alternating, and prints per round B's rate, the local
 * rate, their ratio, A's write time with B listening, the tail (ms from A's
 * last commit until B had every key) and B's CPU time. Run from another
 * checkout's copy for A/B comparisons.
 *
 *   node benchmarks/replication/batched-ratio.mjs [count]
 */

import { makeValues, now } from '../lib/common.mjs'
import { crdtLevel, makeKeys, writeBatches } from '../lib/stores.mjs'
import { BATCH_SIZE, replicate } from './index.mjs'

const count = Number(process.argv[2] ?? 100_000)
const rounds = Number(process.env.ROUNDS ?? 3)
const keys = makeKeys(count)
const values = makeValues(count)
for (let r = 0; r < rounds; r++) {
  const local = await crdtLevel('ratio-local')
  let localRate
  try {
    const t0 = now()
    await writeBatches(local.store, keys, values, BATCH_SIZE)
    localRate = count / (now() - t0) * 1000
  } finally {
    await local.close()
  }
  const res = await replicate({ count, batchSize: BATCH_SIZE, timeoutMs: 300_000, label: `bratio${r}` })
  if (res.error != null) {
    console.log(`round ${r}: ${res.error}`)
    continue
  }
  const b = count / res.ms * 1000
  console.log(`round ${r}: local ${localRate.toFixed(0)} keys/s, B ${b.toFixed(0)} keys/s, ratio ${(b / localRate).toFixed(2)}, A wrote in ${res.writeMs.toFixed(0)} ms, tail ${(res.ms - res.writeMs).toFixed(0)} ms, CPU A ${res.writeCpuMs.toFixed(0)} ms, B ${res.cpuMs?.toFixed(0)} ms`)
}
