/**
 * The sync server alone, and the merge alone, on a chain kept on disk: a
 * tool for A/B runs of the catch-up path, not part of `npm run bench`.
 *
 *   node benchmarks/deep-catch-up/serve.mjs write <dir> <count>   # A writes a chain of single puts into <dir>
 *   node benchmarks/deep-catch-up/serve.mjs serve <dir> [rounds]  # streams the whole chain from A to a bare asker
 *   node benchmarks/deep-catch-up/serve.mjs catchup <dir>         # a fresh in-process B catches up A's chain
 *   node benchmarks/deep-catch-up/serve.mjs local <dir>           # B walks the chain with every block local already
 *
 * `serve` opens A on <dir> (read only in effect) and a second libp2p node
 * on the memory transport that asks A for the chain through the sync
 * protocol, one request after the other (the asker's `have` is what it got
 * so far), checking every block by hash and decoding it, but storing
 * nothing: the rate is the server's walk plus the wire. `catchup` runs a
 * whole store B (LevelDB in a temp dir) in the same process, for profiles
 * (`node --cpu-prof …`). `local` copies A's blocks into a fresh B and
 * merges the chain from them, no network and no stream: the walk and the
 * merge alone. Run against another checkout's dist by setting
 * DIST=/path/to/dist.
 */

import { cp, rm, mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const DIST = process.env.DIST ?? new URL('../../dist', import.meta.url).pathname
const { createHeliaCRDT, SYNC_PROTOCOL } = await import(`${DIST}/src/helia/index.js`)
const { createReplicaNode } = await import(`${DIST}/src/node/index.js`)
const { streamBlocks } = await import(`${DIST}/src/helia/sync/client.js`)
const { Key } = await import('interface-datastore')

const [cmd, dir, arg] = process.argv.slice(2)
const topic = 'serve-bench'

async function openA (listen) {
  const node = await createReplicaNode({ directory: dir, listen })
  const store = await createHeliaCRDT(node, { topic, rebroadcastInterval: 60_000, repairInterval: 0 })
  return { node, store }
}

if (cmd === 'write') {
  const count = Number(arg)
  const { node, store } = await openA(['/memory/serve-bench-w'])
  const t0 = performance.now()
  for (let i = 0; i < count; i++) await store.put(new Key(`/k/${String(i).padStart(8, '0')}`), new TextEncoder().encode(`value ${i} `.padEnd(100, 'x')))
  console.log(`wrote ${count} puts in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
  await store.stop()
  await node.stop()
} else if (cmd === 'serve') {
  const rounds = Number(arg ?? 3)
  const { node, store } = await openA(['/memory/serve-bench-a'])
  const head = store.heads()[0].cid
  const asker = await createReplicaNode({ listen: ['/memory/serve-bench-b'] })
  const { multiaddr } = await import('@multiformats/multiaddr')
  await asker.libp2p.dial(multiaddr('/memory/serve-bench-a'))
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now()
    let want = [head]
    let total = 0
    while (want.length > 0) {
      const stream = await asker.libp2p.dialProtocol(node.libp2p.peerId, SYNC_PROTOCOL)
      const result = await streamBlocks(stream, { want, have: [], maxBlocks: 8192, maxBytes: 64 * 1024 * 1024 }, {
        maxBlockSize: 2 * 1024 * 1024,
        idleTimeout: 10_000,
        accept: async () => {}
      })
      total += result.blocks
      want = result.undelivered.slice(0, 256)
    }
    const s = (performance.now() - t0) / 1000
    console.log(`round ${r + 1}: ${total} blocks in ${s.toFixed(2)} s = ${Math.round(total / s)} blocks/s`)
  }
  await asker.stop()
  await store.stop()
  await node.stop()
} else if (cmd === 'catchup') {
  const { node, store } = await openA(['/memory/serve-bench-a'])
  const expected = (await store.stats()).maxHeight
  const bDir = await mkdtemp(join(tmpdir(), 'serve-bench-b-'))
  const bNode = await createReplicaNode({ directory: bDir, listen: ['/memory/serve-bench-b'] })
  const b = await createHeliaCRDT(bNode, { topic, rebroadcastInterval: 60_000, repairInterval: 0 })
  const { multiaddr } = await import('@multiformats/multiaddr')
  await bNode.libp2p.dial(multiaddr('/memory/serve-bench-a'))
  let merged = 0
  b.addEventListener('put', () => { merged++ })
  const t0 = performance.now()
  const cpu0 = process.cpuUsage()
  const { encodeBroadcast } = await import(`${DIST}/src/index.js`)
  void b.receive(encodeBroadcast(store.heads().map(h => ({ cid: h.cid, dagName: h.dagName }))))
  const timeline = process.env.TIMELINE === '1'
  let last = 0
  while (merged < expected) {
    await new Promise(resolve => setTimeout(resolve, 20))
    if (timeline && performance.now() - last > 1000) {
      last = performance.now()
      console.log(`${((last - t0) / 1000).toFixed(1)} s: streamed ${b.sync?.blockstore.stats.blocks}, merged ${merged}, handed over ${b.sync?.blockstore.stats.handedOver}`)
    }
  }
  const s = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  const cpuS = (cpu.user + cpu.system) / 1e6
  console.log(`caught up ${expected} nodes in ${s.toFixed(2)} s = ${Math.round(expected / s)} nodes/s, ${Math.round(expected / cpuS)} nodes per CPU-s (both sides); rss ${Math.round(process.memoryUsage().rss / 1048576)} MB`)
  if (typeof globalThis.gc === 'function') {
    // with --expose-gc: what stays live once caught up (both replicas), after full collections
    globalThis.gc()
    globalThis.gc()
    const m = process.memoryUsage()
    console.log(`live after full GC: heap ${Math.round(m.heapUsed / 1048576)} MB, external ${Math.round(m.external / 1048576)} MB (array buffers ${Math.round(m.arrayBuffers / 1048576)} MB)`)
  }
  await b.stop()
  await bNode.stop()
  await store.stop()
  await node.stop()
  await rm(bDir, { recursive: true, force: true })
} else if (cmd === 'local') {
  const { node, store } = await openA([])
  const heads = store.heads().map(h => ({ cid: h.cid, dagName: h.dagName }))
  const expected = (await store.stats()).maxHeight
  await store.stop()
  await node.stop()
  const bDir = await mkdtemp(join(tmpdir(), 'serve-bench-local-'))
  await cp(join(dir, 'blocks'), join(bDir, 'blocks'), { recursive: true })
  const bNode = await createReplicaNode({ directory: bDir, listen: [] })
  const b = await createHeliaCRDT(bNode, { topic, rebroadcastInterval: 60_000, repairInterval: 0 })
  let merged = 0
  b.addEventListener('put', () => { merged++ })
  const { encodeBroadcast } = await import(`${DIST}/src/index.js`)
  const t0 = performance.now()
  const cpu0 = process.cpuUsage()
  void b.receive(encodeBroadcast(heads))
  while (merged < expected) await new Promise(resolve => setTimeout(resolve, 20))
  const s = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  console.log(`merged ${expected} local nodes in ${s.toFixed(2)} s = ${Math.round(expected / s)} nodes/s, ${Math.round(expected * 1e6 / (cpu.user + cpu.system))} nodes per CPU-s; rss ${Math.round(process.memoryUsage().rss / 1048576)} MB`)
  await b.stop()
  await bNode.stop()
  await rm(bDir, { recursive: true, force: true })
} else {
  console.error('usage: serve.mjs write|serve|catchup|local <dir> [count|rounds]')
  process.exit(1)
}
