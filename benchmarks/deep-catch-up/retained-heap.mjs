/**
 * Does a catching-up replica keep memory per node it fetched? In one
 * process: A writes N single-put nodes, a fresh B dials A and catches up;
 * B's heap is measured after forced GCs before the dial and after the last
 * node. Run after `npm run build`:
 *
 *   for n in 1000 2000 3000 6000; do node --expose-gc benchmarks/deep-catch-up/retained-heap.mjs $n; done
 *
 * A leak shows as growth with N; a bounded working set does not. (The
 * "before" figure includes A, whose heap grows while it publishes: gossipsub
 * keeps published messages for a while.)
 */

import { Key } from 'interface-datastore'
import { createHeliaCRDT } from '../../dist/src/helia/index.js'
import { createReplicaNode } from '../../dist/src/node/index.js'

if (typeof global.gc !== 'function') {
  console.error('run with node --expose-gc')
  process.exit(2)
}
const sleep = async (ms) => new Promise(resolve => setTimeout(resolve, ms))
const heapAfterGc = async () => {
  global.gc()
  await sleep(100)
  global.gc()
  return process.memoryUsage().heapUsed
}

const n = Number(process.argv[2] ?? 1000)
{
  const a = await createReplicaNode()
  const storeA = await createHeliaCRDT(a, { topic: `retained-${n}`, rebroadcastInterval: 1000 })
  for (let i = 0; i < n; i++) await storeA.put(new Key(`/k/${i}`), new Uint8Array(100))
  const b = await createReplicaNode()
  const storeB = await createHeliaCRDT(b, { topic: `retained-${n}`, rebroadcastInterval: 1000 })
  let merged = 0
  storeB.addEventListener('processed', () => { merged++ })
  const before = await heapAfterGc()
  await b.libp2p.dial(a.libp2p.getMultiaddrs()[0])
  const t0 = Date.now()
  for (let round = 0; merged < n && round < 3000; round++) await sleep(100)
  const after = await heapAfterGc()
  console.log(`${n} nodes: caught up ${merged} in ${Date.now() - t0} ms; heap ${(before / 1e6).toFixed(1)} MB before the dial, ${(after / 1e6).toFixed(1)} MB after (+${((after - before) / 1e6).toFixed(1)} MB)`)
  await storeB.stop()
  await b.stop()
  await storeA.stop()
  await a.stop()
}
