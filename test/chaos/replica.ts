/**
 * One replica of a chaos run, as a child process: a Helia node on
 * 127.0.0.1 with LevelDB stores in its data directory, a CRDT store whose
 * broadcaster injects faults, syncing through the block-sync protocol in
 * front of bitswap (or bitswap alone when `config.syncProtocol` is false), driven by JSON messages over the IPC channel
 * (see `ReplicaRequest` in protocol.ts). The parent kills it with SIGKILL
 * whenever it likes and restarts it from the same directory.
 */

import { createHash } from 'node:crypto'
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { concat as uint8ArrayConcat } from 'uint8arrays/concat'
import { CRDTBroadcast } from '../../src/codec/pb/broadcast.js'
import { heliaDAGSyncer } from '../../src/helia/dag-syncer.js'
import { pubsubBroadcaster } from '../../src/helia/index.js'
import { heliaSync } from '../../src/helia/sync/helia-sync.js'
import { createCRDTDatastore, encodeBroadcast, encodeNode } from '../../src/index.js'
import { createReplicaNode } from '../../src/node/index.js'
import { FaultyBroadcaster } from '../fixtures/faulty-broadcaster.js'
import { rng } from '../fixtures/network.js'
import { dagPbNode, delta, element } from '../fixtures/pb-writer.js'
import { CHAOS_NAMESPACE } from './protocol.js'
import type { JunkKind, ReplicaConfig, ReplicaEvent, ReplicaReply, ReplicaRequest, ReplicaStatus } from './protocol.js'
import type { CRDTDatastore, DAGBlockstore } from '../../src/index.js'

const config: ReplicaConfig = JSON.parse(process.argv[2])
const random = rng(config.seed)
const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const dec = (b: Uint8Array): string => new TextDecoder().decode(b)

function send (message: ReplicaEvent | ReplicaReply): void {
  process.send?.(message)
}

const blocked = new Set<string>(config.blocked)
const node = await createReplicaNode({ directory: config.dir, listen: ['/ip4/127.0.0.1/tcp/0'] })
node.libp2p.addEventListener('connection:open', (evt) => {
  if (blocked.has(evt.detail.remotePeer.toString())) evt.detail.abort(new Error('partitioned'))
})
const inner = pubsubBroadcaster({ pubsub: node.libp2p.services.pubsub }, { topic: config.topic })
const broadcaster = new FaultyBroadcaster(inner, config.faults, random)
// fetch timings and event-loop delay, for the status report
const fetchStats = { count: 0, totalMs: 0, maxMs: 0 }
const bitswap = heliaDAGSyncer(node)
// the block-sync protocol in front of bitswap, as createHeliaCRDT sets it up, unless this replica plays one without it
const sync = config.syncProtocol ? heliaSync({ libp2p: node.libp2p, blockstore: node.blockstore, fallback: bitswap, logger: node.logger }) : undefined
const syncer: DAGBlockstore = sync?.blockstore ?? bitswap
const timedSyncer: DAGBlockstore = {
  has: async (cid, options) => syncer.has(cid, options),
  put: async (cid, bytes, options) => syncer.put(cid, bytes, options),
  discard: async (cid, options) => syncer.discard?.(cid, options),
  delete: async (cid, options) => syncer.delete?.(cid, options),
  getLocal: syncer.getLocal == null ? undefined : async (cid, options) => syncer.getLocal?.(cid, options),
  async * get (cid: any, options?: any) {
    const start = performance.now()
    const local = await node.blockstore.has(cid)
    try {
      yield * syncer.get(cid, options)
    } finally {
      if (!local) {
        const ms = performance.now() - start
        fetchStats.count++
        fetchStats.totalMs += ms
        fetchStats.maxMs = Math.max(fetchStats.maxMs, ms)
      }
    }
  }
}
const loopDelay = monitorEventLoopDelay({ resolution: 20 })
loopDelay.enable()
await sync?.start()
// trusted mode: the node's own key signs; a rogue counts itself a writer, so it writes and signs what the others refuse
const privateKey = config.writers == null ? undefined : privateKeyFromProtobuf(await readFile(join(config.dir, 'peer.key')))
const selfId = node.libp2p.peerId.toString()
const writers = config.writers == null ? undefined : config.rogue === true ? [...config.writers, selfId] : config.writers
/** Payloads of the honest replicas the rogue heard, to replay later */
const heard: Uint8Array[] = []
if (config.rogue === true) {
  node.libp2p.services.pubsub.addEventListener('message', (evt: CustomEvent<{ topic: string, data: Uint8Array }>) => {
    if (evt.detail.topic === config.topic && heard.length < 200) heard.push(evt.detail.data)
  })
}
const store: CRDTDatastore = await createCRDTDatastore({ datastore: node.datastore, blockstore: timedSyncer, broadcaster, privateKey }, {
  namespace: CHAOS_NAMESPACE,
  ...config.store,
  ...(writers == null ? {} : { writers })
})
sync?.blockstore.setHave(() => store.heads().map(h => h.cid))

const startedAt = Date.now()
// peak memory, sampled: the hostile kinds must not make an honest replica grow without bound
let peakRss = process.memoryUsage().rss
const rssTimer = setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage().rss) }, 250)
rssTimer.unref()
/** When each value first became visible here (values are unique per write) */
const arrivals = new Map<string, number>()
store.addEventListener('put', (evt) => {
  const value = dec(evt.detail.value)
  if (!arrivals.has(value) && arrivals.size < 200_000) arrivals.set(value, Date.now())
})

async function dirBytes (dir: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => [])) {
    if (entry.isFile()) total += await stat(join(entry.parentPath, entry.name)).then(s => s.size, () => 0)
  }
  return total
}

let processedLocal = 0
let processedRemote = 0
/** Armed by the parent: send `armed` once this many more nodes are processed */
let armedRemote: { until: number } | undefined
let armedLocal: { until: number, id: number } | undefined
store.addEventListener('processed', (evt) => {
  if (evt.detail.local) {
    processedLocal++
    if (armedLocal != null && processedLocal >= armedLocal.until) {
      send({ event: 'armed', id: armedLocal.id })
      armedLocal = undefined
    }
  } else {
    processedRemote++
    if (armedRemote != null && processedRemote >= armedRemote.until) {
      send({ event: 'armed' })
      armedRemote = undefined
    }
  }
})

async function status (): Promise<ReplicaStatus> {
  const lines: string[] = []
  for await (const { key, value } of store.query({})) lines.push(`${key.toString()}=${dec(value)}`)
  lines.sort()
  return {
    keys: lines.length,
    hash: createHash('sha256').update(lines.join('\n')).digest('hex').slice(0, 16),
    heads: store.heads().map(h => h.cid.toString()).sort(),
    dirty: await store.isDirty(),
    pending: (await store.pendingBranches()).length,
    pendingCids: (await store.pendingBranches()).slice(0, 5).map(String),
    connections: node.libp2p.getConnections().length,
    peers: [...new Set(node.libp2p.getConnections().map(c => c.remotePeer.toString()))],
    subscribers: node.libp2p.services.pubsub.getSubscribers(config.topic).map(String),
    queued: store.stats().queuedJobs,
    fetches: { count: fetchStats.count, avgMs: Math.round(fetchStats.totalMs / Math.max(1, fetchStats.count)), maxMs: Math.round(fetchStats.maxMs) },
    loopDelayMs: { p50: Math.round(loopDelay.percentile(50) / 1e6), p99: Math.round(loopDelay.percentile(99) / 1e6) },
    processedLocal,
    processedRemote,
    faults: { ...broadcaster.counts },
    ...await givenUpStatus(),
    startedAt,
    rssBytes: process.memoryUsage().rss,
    peakRssBytes: (peakRss = Math.max(peakRss, process.memoryUsage().rss)),
    blockstoreBytes: await dirBytes(join(config.dir, 'blocks')),
    syncBlocks: sync?.blockstore.stats.blocks ?? 0,
    rejectedBroadcasts: store.stats().rejectedBroadcasts ?? 0,
    history: config.store.compaction == null ? undefined : await historyStatus()
  }
}

async function historyStatus (): Promise<{ compacted?: string, jobs: number, gone: number }> {
  const count = async (prefix: string): Promise<number> => {
    let n = 0
    for await (const _ of node.datastore.queryKeys({ prefix })) n++ // eslint-disable-line @typescript-eslint/no-unused-vars
    return n
  }
  const merged = await count(`${CHAOS_NAMESPACE}/b/`)
  const kept = (await store.historyStats()).nodes
  return { compacted: store.stats().history.compacted?.toString(), jobs: await count(`${CHAOS_NAMESPACE}/z/j/`), gone: merged - kept }
}

async function givenUpStatus (): Promise<{ givenUp: string[], givenUpCount: number }> {
  const all = await store.givenUpBranches()
  return { givenUp: all.slice(0, 100).map(b => b.cid.toString()), givenUpCount: all.length }
}

async function state (): Promise<Array<[string, string]>> {
  const out: Array<[string, string]> = []
  for await (const { key, value } of store.query({})) out.push([key.toString(), dec(value)])
  return out.sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)
}

async function dagPbCid (bytes: Uint8Array): Promise<CID> {
  return CID.createV1(0x70, await sha256.digest(bytes))
}

/** Publishes a junk head (and its block), and hands it to this replica too */
async function junk (kind: JunkKind, tag: string): Promise<{ cid?: string, key?: string, value?: string }> {
  const randomBytes = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => Math.floor(random() * 256))
  let payload: Uint8Array
  let cid: CID | undefined
  let written: { key: string, value: string } | undefined
  switch (kind) {
    case 'garbage-payload':
      payload = randomBytes(1 + Math.floor(random() * 200))
      break
    case 'missing-head':
      // a valid CID of a block nobody has
      cid = await dagPbCid(randomBytes(32))
      payload = encodeBroadcast([{ cid, dagName: '' }])
      break
    case 'head-flood': {
      // a hostile replica announcing many heads nobody has: honest heads keep their turns
      const heads = await Promise.all(Array.from({ length: 100 }, async () => ({ cid: await dagPbCid(randomBytes(32)), dagName: '' })))
      await inner.broadcast(encodeBroadcast(heads))
      return { cid: heads[0].cid.toString() }
    }
    case 'missing-links': {
      // a real write in a node linking blocks nobody has: merged at once, its links given up in time
      const links = await Promise.all(Array.from({ length: 30 }, async () => dagPbCid(randomBytes(32))))
      written = { key: `/junk/${tag}`, value: `links-${tag}` }
      const built = await encodeNode({ elements: [{ key: written.key, id: '', value: enc(written.value) }], tombstones: [], priority: 1, dagName: '' }, links)
      await node.blockstore.put(built.cid, built.bytes)
      cid = built.cid
      payload = encodeBroadcast([{ cid, dagName: '' }])
      break
    }
    case 'raw-head':
      cid = CID.createV1(0x55, await sha256.digest(randomBytes(16)))
      payload = encodeBroadcast([{ cid, dagName: '' }])
      break
    case 'random-block':
    case 'bad-delta':
    case 'huge-priority': {
      const bytes = kind === 'random-block'
        ? randomBytes(64)
        : kind === 'bad-delta'
          ? dagPbNode([0xff, 0xff, 0xff], [])
          : dagPbNode(delta([element(`/junk/${tag}`, '', 'absurd')], [], 2n ** 64n - 1n), [])
      cid = await dagPbCid(bytes)
      await node.blockstore.put(cid, bytes)
      payload = encodeBroadcast([{ cid, dagName: '' }])
      break
    }
    case 'valid-over-junk': {
      // a well-formed node carrying a real write, whose only link is junk
      const child = randomBytes(48)
      const childCid = await dagPbCid(child)
      await node.blockstore.put(childCid, child)
      written = { key: `/junk/${tag}`, value: `junk-${tag}` }
      const built = await encodeNode({ elements: [{ key: written.key, id: '', value: enc(written.value) }], tombstones: [], priority: 1, dagName: '' }, [childCid])
      await node.blockstore.put(built.cid, built.bytes)
      cid = built.cid
      payload = encodeBroadcast([{ cid, dagName: '' }])
      break
    }
    // no default
  }
  await inner.broadcast(payload)
  await store.receive(payload)
  if (written != null && !(await store.has(new Key(written.key)))) {
    throw new Error(`the junk-linked node ${String(cid)} was not merged locally`)
  }
  return { cid: cid?.toString(), ...written }
}

/** The rogue's turn: a write of its own, a forged broadcast naming a writer, a replayed broadcast */
async function rogue (tag: string, writer: string): Promise<Array<[string, string]>> {
  if (config.rogue !== true || privateKey == null) throw new Error('not the rogue replica')
  const written: Array<[string, string]> = [[`/rogue/${tag}`, `rogue-${tag}`], [`/k/${tag.length % 40}`, `rogue-${tag}-k`]]
  const batch = store.batch()
  for (const [k, v] of written) batch.put(new Key(k), enc(v))
  // signed with the rogue's own key and broadcast by the store: refused, as the rogue is no writer
  await batch.commit()
  // the same head, signed by the rogue but claiming a writer's public key
  const heads = store.heads().map(h => ({ cid: h.cid, dagName: h.dagName }))
  const unsigned = encodeBroadcast(heads)
  const claimed = peerIdFromString(writer).publicKey?.toMultihash().digest
  if (claimed != null) {
    const signature = await privateKey.sign(uint8ArrayConcat([unsigned, enc(config.topic)]))
    const forged = uint8ArrayConcat([unsigned, CRDTBroadcast.encode({ Heads: [], Signature: { PublicKey: claimed as Uint8Array<ArrayBuffer>, Signature: signature as Uint8Array<ArrayBuffer> } })])
    await inner.broadcast(forged)
  }
  // an honest writer's old signed broadcast, again: harmless
  if (heard.length > 0) await inner.broadcast(heard[Math.floor(random() * heard.length)])
  return written
}

async function handle (req: ReplicaRequest): Promise<unknown> {
  switch (req.cmd) {
    case 'put':
      await store.put(new Key(req.key), enc(req.value))
      return undefined
    case 'delete':
      await store.delete(new Key(req.key))
      return undefined
    case 'batch': {
      const batch = store.batch()
      for (const op of req.ops) {
        if (op.value == null) batch.delete(new Key(op.key))
        else batch.put(new Key(op.key), enc(op.value))
      }
      if (req.armParts != null) armedLocal = { until: processedLocal + req.armParts, id: req.id }
      await batch.commit()
      return undefined
    }
    case 'arm':
      armedRemote = { until: processedRemote + req.remote }
      return processedRemote
    case 'status':
      return status()
    case 'state':
      return state()
    case 'dial': {
      let connected = 0
      await Promise.all(req.addrs.map(async addr => {
        try {
          await node.libp2p.dial(multiaddr(addr), { signal: AbortSignal.timeout(5000) })
          connected++
        } catch {}
      }))
      return connected
    }
    case 'block':
      blocked.clear()
      for (const peer of req.peers) blocked.add(peer)
      for (const conn of node.libp2p.getConnections()) {
        if (blocked.has(conn.remotePeer.toString())) conn.abort(new Error('partitioned'))
      }
      // what the harness checks before it counts a partition as in effect
      return {
        blocked: blocked.size,
        open: node.libp2p.getConnections().filter(conn => blocked.has(conn.remotePeer.toString()) && conn.status === 'open').length
      }
    case 'faults':
      broadcaster.faults = { ...broadcaster.faults, ...req.faults }
      return undefined
    case 'junk':
      return junk(req.kind, req.tag)
    case 'arrivals':
      return [...arrivals]
    case 'rogue':
      return rogue(req.tag, req.writer)
    case 'merged': {
      const merged: string[] = []
      for (const cid of req.cids) if (await store.hasMerged(CID.parse(cid))) merged.push(cid)
      return merged
    }
    case 'compact': {
      const result = await store.compact()
      return { snapshot: result.snapshot.toString(), removed: result.removed, waiting: result.waiting }
    }
    case 'stop':
      await store.stop()
      await sync?.stop()
      await broadcaster.stop()
      await node.stop()
      return undefined
    // no default
  }
}

process.on('message', (req: ReplicaRequest) => {
  handle(req).then(result => {
    if (req.cmd === 'stop') {
      process.send?.({ id: req.id, ok: true }, () => { process.exit(0) })
      return
    }
    send({ id: req.id, ok: true, result })
  }, (err: any) => {
    send({ id: req.id, ok: false, error: { name: err?.name ?? 'Error', message: String(err?.message ?? err) } })
  })
})

// the parent's death ends this replica too
process.on('disconnect', () => { process.exit(3) })

send({ event: 'ready', peerId: node.libp2p.peerId.toString(), addrs: node.libp2p.getMultiaddrs().map(String) })
