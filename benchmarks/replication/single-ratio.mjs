/**
 * A tool, not in `npm run bench`: runs the single-put replication of
 * index.mjs `ROUNDS` times (default 3) and prints, per round, A's put rate,
 * B's rate and their ratio, with the tail (ms from A's last put until B
 * had every key) and the CPU time per put of each side. Run from another checkout's copy for A/B comparisons.
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
  // CPU per put: A's process while it wrote, B's from 'go' until it had every key (all threads)
  const cpu = `CPU per put A ${(res.writeCpuMs / count).toFixed(2)} ms, B ${(res.cpuMs / count).toFixed(2)} ms`
  console.log(`round ${r}: A ${a.toFixed(0)} puts/s, B ${b.toFixed(0)} keys/s, ratio ${(b / a).toFixed(2)}, tail ${(res.ms - res.writeMs).toFixed(0)} ms, ${cpu}`)
}
