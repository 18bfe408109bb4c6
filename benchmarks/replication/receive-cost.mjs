/**
 * A tool, not in `npm run bench`: what merging received nodes costs a
 * replica without the network. A writes `count` keys (default 100k) in
 * batches of `batchSize` (default 1,000) on LevelDB; then a second offline
 * store B receives A's nodes in order, each as a broadcast carrying its
 * block (`store.receive()`: hash check, block stored, merge). Prints both
 * times and CPU times per round (`ROUNDS`, default 2). B/A near 1 means a
 * received node costs what a written one does: what a networked B pays
 * beyond that is the network and sharing the machine with A.
 *
 *   node benchmarks/replication/receive-cost.mjs [count] [batchSize]
 */

import toBuffer from 'it-to-buffer'
import { decodeNode } from '../../dist/src/codec/dag-node.js'
import { encodeBroadcastWithBlocks } from '../../dist/src/index.js'
import { makeValues, now } from '../lib/common.mjs'
import { crdtLevel, makeKeys, writeBatches } from '../lib/stores.mjs'

const count = Number(process.argv[2] ?? 100_000)
const batchSize = Number(process.argv[3] ?? 1000)
const rounds = Number(process.env.ROUNDS ?? 2)
const keys = makeKeys(count)
const values = makeValues(count)

/** CPU ms of this process since `from` */
function cpuSince (from) {
  const c = process.cpuUsage(from)
  return (c.user + c.system) / 1000
}

for (let r = 0; r < rounds; r++) {
  const a = await crdtLevel('receive-cost-a')
  let t0 = now()
  let c0 = process.cpuUsage()
  await writeBatches(a.store, keys, values, batchSize)
  const aMs = now() - t0
  const aCpu = cpuSince(c0)
  // A's chain, oldest first: each node as the broadcast that announced it
  const chain = []
  let cid = a.store.heads()[0].cid
  while (cid != null) {
    const bytes = await toBuffer(a.blockstore.get(cid))
    chain.push(encodeBroadcastWithBlocks([{ cid, dagName: '' }], [{ cid, bytes }], bytes.byteLength + 1024))
    cid = decodeNode(cid, bytes).links[0]
  }
  chain.reverse()
  await a.close()

  const b = await crdtLevel('receive-cost-b')
  try {
    t0 = now()
    c0 = process.cpuUsage()
    for (const payload of chain) await b.store.receive(payload)
    const bMs = now() - t0
    const bCpu = cpuSince(c0)
    let held = 0
    for await (const _ of b.store.queryKeys({})) held++ // eslint-disable-line no-unused-vars
    console.log(`round ${r}: A wrote ${count} keys in ${aMs.toFixed(0)} ms (CPU ${aCpu.toFixed(0)} ms); B received ${chain.length} nodes in ${bMs.toFixed(0)} ms (CPU ${bCpu.toFixed(0)} ms); B/A time ${(bMs / aMs).toFixed(2)}, CPU ${(bCpu / aCpu).toFixed(2)}; B holds ${held} keys`)
  } finally {
    await b.close()
  }
}
