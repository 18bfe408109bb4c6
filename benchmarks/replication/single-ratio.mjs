/**
 * A tool, not in `npm run bench`: runs the single-put replication of
 * index.mjs `ROUNDS` times (default 3) and prints, per round, A's put rate,
 * B's rate and their ratio, with the tail (ms from A's last put until B
 * had every key). Run from another checkout's copy for A/B comparisons.
 *
 *   node benchmarks/replication/single-ratio.mjs [count]
 */

import { replicate } from './index.mjs'

const count = Number(process.argv[2] ?? 1000)
const rounds = Number(process.env.ROUNDS ?? 3)
for (let r = 0; r < rounds; r++) {
  const res = await replicate({ count, batchSize: 1, timeoutMs: 180_000, label: `ratio${r}` })
  if (res.error != null) {
    console.log(`round ${r}: ${res.error}`)
    continue
  }
  const a = count / res.writeMs * 1000
  const b = count / res.ms * 1000
  console.log(`round ${r}: A ${a.toFixed(0)} puts/s, B ${b.toFixed(0)} keys/s, ratio ${(b / a).toFixed(2)}, tail ${(res.ms - res.writeMs).toFixed(0)} ms`)
}
