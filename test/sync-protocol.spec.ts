/**
 * The block-sync protocol between real libp2p nodes (memory transport, and
 * TCP on 127.0.0.1 for one case): catch-up of a chain and of a wide DAG,
 * fallback to bitswap, and the limits a server keeps against its askers.
 */

import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { createHeliaCRDT } from '../src/helia/index.js'
import { streamBlocks } from '../src/helia/sync/client.js'
import { SYNC_PROTOCOL } from '../src/helia/sync/protocol.js'
import { HAVE_WALK_BUDGET } from '../src/helia/sync/server.js'
import { encodeBroadcast, encodeNode } from '../src/index.js'
import { createReplicaNode } from '../src/node/index.js'
import { stateOf, waitFor } from './fixtures/network.js'
import { enc, tempDir } from './fixtures/stores.js'
import { hostileServer, openSyncStream, readFrames } from './fixtures/sync-peers.js'
import type { HeliaCRDTDatastore, HeliaCRDTInit, SyncStats } from '../src/helia/index.js'
import type { BlockRequest } from '../src/helia/sync/protocol.js'
import type { ReplicaNode } from '../src/node/index.js'
import type { Stream } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'

interface Peer {
  node: ReplicaNode
  store: HeliaCRDTDatastore
}

const TOPIC = 'sync-protocol-test'
const STORE_OPTIONS = { rebroadcastInterval: 300, repairInterval: 1000, dagSyncerTimeout: 10_000, numWorkers: 8 }
let seq = 0

async function startPeer (init: Partial<HeliaCRDTInit> = {}, listen = [`/memory/sync-${process.pid}-${seq++}`]): Promise<Peer> {
  const node = await createReplicaNode({ listen })
  const store = await createHeliaCRDT(node, { topic: TOPIC, ...STORE_OPTIONS, ...init })
  return { node, store }
}

async function stopPeer (peer: Peer): Promise<void> {
  await peer.store.stop()
  await peer.node.stop()
}

async function connect (a: Peer, b: Peer): Promise<void> {
  await a.node.libp2p.dial(b.node.libp2p.getMultiaddrs()[0])
  await waitFor(() => a.node.libp2p.services.pubsub.getSubscribers(TOPIC).length > 0 &&
    b.node.libp2p.services.pubsub.getSubscribers(TOPIC).length > 0, 10_000, 'gossipsub subscriptions')
}

async function converge (peers: Peer[], keys: number, timeout = 60_000): Promise<string[]> {
  let states: string[][] = []
  await waitFor(async () => {
    states = await Promise.all(peers.map(async p => stateOf(p.store)))
    return states.every(s => s.length === keys && JSON.stringify(s) === JSON.stringify(states[0]))
  }, timeout, 'convergence', 100).catch(err => {
    throw new Error(`${err.message}: ${states.map(s => s.length).join(', ')} keys`)
  })
  return states[0]
}

/**
 * A go-shaped chain C1..Cn (one put each, Unicode keys, heights 1..n), a
 * node D at height `joinAt + 1` linking only C<joinAt> (its writer had seen
 * no more), and a head H at height n + 1 linking Cn and D; every block in
 * `blockstore`
 */
async function joinedBelow (blockstore: { put(cid: CID, bytes: Uint8Array): unknown }, n: number, joinAt: number): Promise<{ chain: CID[], d: CID, h: CID }> {
  const chain: CID[] = []
  for (let i = 1; i <= n; i++) {
    const node = await encodeNode({ elements: [{ key: `/chaîne/${i}/ключ`, id: '', value: enc(`v${i} ✓`) }], tombstones: [], priority: i, dagName: '' }, chain.slice(-1))
    await blockstore.put(node.cid, node.bytes)
    chain.push(node.cid)
  }
  const d = await encodeNode({ elements: [{ key: '/late/écrivain', id: '', value: enc('d') }], tombstones: [], priority: joinAt + 1, dagName: '' }, [chain[joinAt - 1]])
  await blockstore.put(d.cid, d.bytes)
  const h = await encodeNode({ elements: [{ key: '/merged/頭', id: '', value: enc('h') }], tombstones: [], priority: n + 1, dagName: '' }, [chain[n - 1], d.cid])
  await blockstore.put(h.cid, h.bytes)
  return { chain, d: d.cid, h: h.cid }
}

describe('sync protocol', function () {
  this.timeout(120_000)
  let peers: Peer[] = []

  afterEach(async () => {
    await Promise.all(peers.map(stopPeer))
    peers = []
  })

  it('registers the protocol on the node and unregisters it on stop', async () => {
    const a = await startPeer()
    expect(a.node.libp2p.getProtocols()).to.include(SYNC_PROTOCOL)
    await a.store.stop()
    expect(a.node.libp2p.getProtocols()).to.not.include(SYNC_PROTOCOL)
    await a.node.stop()
  })

  it('a fresh replica catches up a chain through the protocol', async () => {
    const a = await startPeer()
    peers.push(a)
    for (let i = 0; i < 300; i++) await a.store.put(new Key(`/chain/${i}`), enc(`v${i}`))
    const b = await startPeer()
    peers.push(b)
    await connect(a, b)
    await converge([a, b], 300)
    const stats = b.store.sync?.blockstore.stats
    // all but the head (carried or fetched first) came by stream
    expect(stats?.blocks).to.be.at.least(299)
    expect(stats?.fallbacks).to.be.at.most(1)
    expect(stats?.cut).to.equal(0)
    // one request for the chain: a replica mid-walk never says it holds all below its heads, or the
    // server would leave out everything below the head it adopted, and each node would cost a request
    expect(stats?.requests).to.be.at.most(3)
    // streamed blocks reach the walker decoded, most without a read back from disk
    expect(stats?.handedOver).to.be.greaterThan(150)
  })

  for (const onDisk of [false, true]) {
    it(`tells bitswap of streamed blocks once they are stored, so peers that already want them get them (${onDisk ? 'LevelDB: one batch per delivery' : 'memory blockstore'})`, async () => {
      const a = await startPeer()
      peers.push(a)
      for (let i = 0; i < 60; i++) await a.store.put(new Key(`/told/${i}`), enc(`v${i}`))
      const dir = onDisk ? await tempDir('sync-told') : undefined
      const node = await createReplicaNode({ listen: [`/memory/sync-${process.pid}-${seq++}`], ...(dir == null ? {} : { directory: dir.path }) })
      // every announce B's bitswap hears, with whether the block was stored at that moment
      const bitswap = (node as any).blockBrokers.find((b: any) => b.name === 'bitswap')
      const local = (node.blockstore as any).unwrap().unwrap()
      const announce = bitswap.announce.bind(bitswap)
      const heard: Array<{ cid: string, stored: Promise<boolean> }> = []
      bitswap.announce = async (cid: any, options: any) => {
        heard.push({ cid: cid.toString(), stored: Promise.resolve(local.has(cid)) })
        return announce(cid, options)
      }
      const b = { node, store: await createHeliaCRDT(node, { topic: TOPIC, ...STORE_OPTIONS }) }
      peers.push(b)
      await connect(a, b)
      await converge([a, b], 60)
      expect(b.store.sync?.blockstore.stats.blocks).to.be.at.least(50)
      const storedWhenTold = new Map<string, boolean>()
      for (const { cid, stored } of heard) storedWhenTold.set(cid, storedWhenTold.get(cid) === true || await stored)
      const late = [...storedWhenTold].filter(([, told]) => !told).map(([cid]) => cid)
      expect(storedWhenTold.size).to.be.at.least(50)
      expect(late, 'blocks bitswap heard of only before they were stored').to.deep.equal([])
      if (dir != null) {
        // each streamed block told once, after its batch landed
        expect(heard.length).to.equal(storedWhenTold.size)
        await stopPeer(b)
        peers = peers.filter(p => p !== b)
        await dir.remove()
      }
    })
  }

  /**
   * Three connected writers put 40 keys each at once (branches that merge,
   * or with `writerInit.broadcastBatchDelay` three chains), then a fresh
   * replica joins one of them and catches up: its sync stats
   */
  async function wideCatchUp (writerInit: Partial<HeliaCRDTInit> = {}): Promise<SyncStats | undefined> {
    const writers = [await startPeer(writerInit), await startPeer(writerInit), await startPeer(writerInit)]
    peers.push(...writers)
    await connect(writers[0], writers[1])
    await connect(writers[1], writers[2])
    await connect(writers[0], writers[2])
    await Promise.all(writers.map(async (w, i) => {
      for (let j = 0; j < 40; j++) await w.store.put(new Key(`/w${i}/${j}`), enc(`${i}-${j}`))
    }))
    await converge(writers, 120)
    const b = await startPeer()
    peers.push(b)
    await connect(writers[0], b)
    await converge([...writers, b], 120)
    return b.store.sync?.blockstore.stats
  }

  it('a fresh replica catches up a wide DAG written by several replicas', async () => {
    const stats = await wideCatchUp()
    expect(stats?.blocks).to.be.at.least(100)
    expect(stats?.cut).to.equal(0)
  })

  it('asks a peer again when it refused a stream at its limit: a wide DAG of gathered announcements arrives by streams alone', async () => {
    // each writer announces its 40 writes together: three chains, three heads asked for at once
    const stats = await wideCatchUp({ broadcastBatchDelay: 5 })
    // a refused stream used to cut the peer off for a minute, leaving a whole chain to bitswap
    expect(stats?.fallbacks).to.equal(0)
    expect(stats?.cut).to.equal(0)
    // all but the three heads, which may come with the writer's greeting
    expect(stats?.blocks).to.be.at.least(117)
  })

  it('asks the announcer of a head first, before other peers that speak the protocol', async () => {
    // X speaks the protocol but never answers: asking it first would cost an idle timeout and a cut
    const x = await createReplicaNode({ listen: [`/memory/sync-${process.pid}-${seq++}`] })
    const silent = await hostileServer(x, 'silent', { get: async () => new Uint8Array(0), other: undefined as any })
    try {
      const c = await startPeer()
      peers.push(c)
      for (let i = 0; i < 40; i++) await c.store.put(new Key(`/announced/${i}`), enc(`v${i}`))
      const b = await startPeer({ syncProtocol: { idleTimeout: 2000 } })
      peers.push(b)
      // X is B's first connection, and B knows it speaks the protocol, before B hears of C's heads
      await b.node.libp2p.dial(x.libp2p.getMultiaddrs()[0])
      await waitFor(async () => (await b.node.libp2p.peerStore.get(x.libp2p.peerId)).protocols.includes(SYNC_PROTOCOL), 10_000, 'identify of X')
      await connect(b, c)
      await converge([b, c], 40)
      const stats = b.store.sync?.blockstore.stats
      expect(silent.requests).to.equal(0)
      expect(stats?.preferred).to.be.at.least(1)
      expect(stats?.requests).to.equal(stats?.preferred)
      expect(stats?.cut).to.equal(0)
    } finally {
      await silent.stop()
      await x.stop()
    }
  })

  it('deletes a streamed block that the store then refuses (over its own maxBlockSize)', async () => {
    const a = await startPeer()
    peers.push(a)
    await a.store.put(new Key('/big'), new Uint8Array(4096).fill(7))
    const [big] = a.store.heads()
    await a.store.put(new Key('/small'), enc('s'))
    const b = await startPeer({ maxBlockSize: 1024 })
    peers.push(b)
    await connect(a, b)
    await waitFor(async () => (await stateOf(b.store)).includes('/small=s') && b.store.stats().givenUpBranches > 0, 30_000, 'the small node merged and the big one given up', 100)
    // it came by stream, and is gone again
    expect(b.store.sync?.blockstore.stats.blocks).to.be.at.least(1)
    expect(await b.node.blockstore.has(big.cid)).to.equal(false)
    expect(await stateOf(b.store)).to.deep.equal(['/small=s'])
  })

  it('falls back to bitswap for a peer without the protocol', async () => {
    const a = await startPeer({ syncProtocol: false })
    peers.push(a)
    expect(a.node.libp2p.getProtocols()).to.not.include(SYNC_PROTOCOL)
    for (let i = 0; i < 30; i++) await a.store.put(new Key(`/k/${i}`), enc(`v${i}`))
    const b = await startPeer()
    peers.push(b)
    await connect(a, b)
    await converge([a, b], 30)
    const stats = b.store.sync?.blockstore.stats
    expect(stats?.requests).to.equal(0)
    expect(stats?.fallbacks).to.be.at.least(29)
  })

  for (const serves of [true, false]) {
    it(`asks a peer whose protocols are not known yet (identify not run) over the protocol, ${serves ? 'and streams' : 'and takes a refusal as a no (bitswap then)'}`, async () => {
      const a = await startPeer(serves ? {} : { syncProtocol: false })
      peers.push(a)
      for (let i = 0; i < 30; i++) await a.store.put(new Key(`/early/${i}`), enc(`v${i}`))
      const node = await createReplicaNode({ listen: [`/memory/sync-${process.pid}-${seq++}`] })
      // B never learns A's protocols, as before identify has run
      const peerStore = node.libp2p.peerStore
      const get = peerStore.get.bind(peerStore)
      peerStore.get = async (...args: Parameters<typeof get>) => ({ ...(await get(...args)), protocols: [], metadata: new Map() })
      const b = { node, store: await createHeliaCRDT(node, { topic: TOPIC, ...STORE_OPTIONS }) }
      peers.push(b)
      await connect(a, b)
      await converge([a, b], 30)
      const stats = b.store.sync?.blockstore.stats
      expect(stats?.cut).to.equal(0)
      if (serves) {
        expect(stats?.requests).to.be.at.least(1)
        expect(stats?.blocks).to.be.at.least(25)
      } else {
        expect(stats?.requests).to.equal(0)
        expect(stats?.fallbacks).to.be.at.least(29)
      }
    })
  }

  it('a replica stopped mid catch-up resumes from its frontier, not from the top', async () => {
    const a = await startPeer()
    peers.push(a)
    const count = 400
    for (let i = 0; i < count; i++) await a.store.put(new Key(`/resume/${i}`), enc(`v${i}`))
    const dir = await tempDir('sync-resume')
    try {
      const listen = [`/memory/sync-${process.pid}-${seq++}`]
      let node = await createReplicaNode({ listen, directory: dir.path })
      let store = await createHeliaCRDT(node, { topic: TOPIC, ...STORE_OPTIONS })
      await connect(a, { node, store })
      await waitFor(async () => (await stateOf(store)).length >= 50, 30_000, 'part of the catch-up', 20)
      const first = store.sync?.blockstore.stats.blocks ?? 0
      await store.stop()
      await node.stop()
      expect((await stateOf(a.store)).length).to.equal(count)

      node = await createReplicaNode({ listen, directory: dir.path })
      store = await createHeliaCRDT(node, { topic: TOPIC, ...STORE_OPTIONS })
      const b = { node, store }
      peers.push(b)
      await connect(a, b)
      await converge([a, b], count)
      const second = store.sync?.blockstore.stats.blocks ?? 0
      // what the first run stored was not streamed again
      expect(first).to.be.greaterThan(0)
      expect(first + second).to.be.at.most(count + 5)
    } finally {
      await dir.remove()
    }
  })

  it('catches up over TCP on 127.0.0.1', async () => {
    const a = await startPeer({}, ['/ip4/127.0.0.1/tcp/0'])
    peers.push(a)
    for (let i = 0; i < 100; i++) await a.store.put(new Key(`/tcp/${i}`), enc(`v${i}`))
    const b = await startPeer({}, ['/ip4/127.0.0.1/tcp/0'])
    peers.push(b)
    await connect(a, b)
    await converge([a, b], 100)
    expect(b.store.sync?.blockstore.stats.blocks).to.be.at.least(99)
  })

  describe('limits against askers', () => {
    it('sends no more blocks than its own cap, whatever the asker asks', async () => {
      const a = await startPeer({ syncProtocol: { maxBlocks: 20 } })
      peers.push(a)
      for (let i = 0; i < 50; i++) await a.store.put(new Key(`/cap/${i}`), enc(`v${i}`))
      const asker = await startPeer({ syncProtocol: false })
      peers.push(asker)
      const head = a.store.heads()[0].cid
      const stream = await openSyncStream(asker.node, a.node)
      const frames = await readFrames(stream, { want: [head], have: [], maxBlocks: 1_000_000, maxBytes: 1 << 30 })
      expect(frames.blocks).to.equal(20)
      expect(frames.ended).to.equal(true)
    })

    it('stops at what the asker has', async () => {
      const a = await startPeer()
      peers.push(a)
      for (let i = 0; i < 10; i++) await a.store.put(new Key(`/have/${i}`), enc(`v${i}`))
      const middle = a.store.heads()[0].cid
      for (let i = 10; i < 20; i++) await a.store.put(new Key(`/have/${i}`), enc(`v${i}`))
      const asker = await startPeer({ syncProtocol: false })
      peers.push(asker)
      const stream = await openSyncStream(asker.node, a.node)
      const frames = await readFrames(stream, { want: [a.store.heads()[0].cid], have: [middle], maxBlocks: 1000, maxBytes: 1 << 30 })
      expect(frames.blocks).to.equal(10)
      // a wanted CID is sent even when it is also listed as had
      const again = await readFrames(await openSyncStream(asker.node, a.node), { want: [middle], have: [middle], maxBlocks: 1, maxBytes: 1 << 20 })
      expect(again.cids).to.deep.equal([middle.toString()])
    })

    it('stops where a wanted branch joins the asker\'s DAG below its heads, when the asker holds all below them', async () => {
      const a = await startPeer()
      peers.push(a)
      const { chain, d, h } = await joinedBelow(a.node.blockstore, 30, 10)
      const asker = await startPeer({ syncProtocol: false })
      peers.push(asker)
      const ask = async (request: BlockRequest): Promise<string[]> => (await readFrames(await openSyncStream(asker.node, a.node), request)).cids
      const base = { want: [h], have: [chain[29]], maxBlocks: 1000, maxBytes: 1 << 30 }
      // complete: C10 and below are reached from the asker's head C30, so only H and D come
      expect(await ask({ ...base, complete: true })).to.deep.equal([h.toString(), d.toString()])
      // not complete (a replica mid-walk): everything below D, as before
      expect(await ask(base)).to.deep.equal([h, d, ...chain.slice(0, 10).reverse()].map(String))
      // a wanted CID also listed as had is one the asker never walked: all below it comes
      expect(await ask({ want: [chain[29]], have: [chain[29]], maxBlocks: 1000, maxBytes: 1 << 30, complete: true })).to.have.lengthOf(30)
    })

    it('reads at most HAVE_WALK_BUDGET blocks below the asker\'s heads, then sends what it cannot tell it holds', async () => {
      const a = await startPeer()
      peers.push(a)
      const n = HAVE_WALK_BUDGET + 100
      // D joins at C5: learning that the asker holds C5 would take n - 5 reads below its head
      const { chain, d, h } = await joinedBelow(a.node.blockstore, n, 5)
      const asker = await startPeer({ syncProtocol: false })
      peers.push(asker)
      const frames = await readFrames(await openSyncStream(asker.node, a.node), { want: [h], have: [chain[n - 1]], maxBlocks: 1000, maxBytes: 1 << 30, complete: true })
      expect(frames.cids).to.deep.equal([h, d, ...chain.slice(0, 5).reverse()].map(String))
    })

    it('a clean replica fetching a head it missed gets only what it lacks', async () => {
      const a = await startPeer()
      const b = await startPeer()
      peers.push(a, b)
      await connect(a, b)
      const { chain, h } = await joinedBelow(a.node.blockstore, 30, 10)
      // B catches up the chain (a fresh replica: its request says nothing of what it holds)
      await b.store.receive(encodeBroadcast([{ cid: chain[29], dagName: '' }]))
      await waitFor(async () => (await stateOf(b.store)).length === 30 && !(await b.store.isDirty()), 20_000, 'B to hold the chain, clean')
      const before = b.store.sync?.blockstore.stats.blocks ?? 0
      // the announcement of H reached B without its block (lost, or too large to carry)
      await b.store.receive(encodeBroadcast([{ cid: h, dagName: '' }]))
      await waitFor(async () => (await stateOf(b.store)).includes('/merged/頭=h'), 20_000, 'H on B')
      expect(await stateOf(b.store)).to.include('/late/écrivain=d')
      // H and D by the stream; not C10 and below again
      expect((b.store.sync?.blockstore.stats.blocks ?? 0) - before).to.equal(2)
    })

    it('resets a stream whose request is junk, and keeps serving', async () => {
      const a = await startPeer()
      peers.push(a)
      await a.store.put(new Key('/x'), enc('y'))
      const asker = await startPeer({ syncProtocol: false })
      peers.push(asker)
      const junk = await openSyncStream(asker.node, a.node)
      const bad = await readFrames(junk, undefined, Uint8Array.of(3, 0xff, 0xff, 0xff))
      expect(bad.blocks).to.equal(0)
      expect(bad.error).to.be.a('string')
      const good = await readFrames(await openSyncStream(asker.node, a.node), { want: [a.store.heads()[0].cid], have: [], maxBlocks: 10, maxBytes: 1 << 20 })
      expect(good.blocks).to.equal(1)
    })

    it('resets a stream whose asker never sends a request', async () => {
      const a = await startPeer({ syncProtocol: { idleTimeout: 300 } })
      peers.push(a)
      const asker = await startPeer({ syncProtocol: false })
      peers.push(asker)
      const silent = await openSyncStream(asker.node, a.node)
      const result = await readFrames(silent, undefined, undefined, 10_000)
      expect(result.blocks).to.equal(0)
      expect(result.ended || result.error != null).to.equal(true)
      expect(result.timedOut).to.equal(false)
    })

    /**
     * A server allowing `limit` streams per peer, holding one node, and
     * `limit + 1` streams to it from an asker, all open before any request
     * is sent (so none has finished), with the request for its node
     */
    async function streamsPastLimit (limit: number): Promise<{ streams: Stream[], request: BlockRequest }> {
      const a = await startPeer({ syncProtocol: { maxStreamsPerPeer: limit } })
      peers.push(a)
      await a.store.put(new Key('/x'), enc('y'))
      const asker = await startPeer({ syncProtocol: false })
      peers.push(asker)
      const streams = await Promise.all(Array.from({ length: limit + 1 }, async () => openSyncStream(asker.node, a.node)))
      return { streams, request: { want: [a.store.heads()[0].cid], have: [], maxBlocks: 10, maxBytes: 1 << 20 } }
    }

    it('a stream the server refuses at its limit rejects with SyncRefusedError, not a protocol error', async () => {
      const { streams, request } = await streamsPastLimit(1)
      const outcomes = await Promise.allSettled(streams.map(async s => streamBlocks(s, request, { maxBlockSize: 1 << 20, idleTimeout: 5000, accept: async () => {} })))
      expect(outcomes.filter(o => o.status === 'fulfilled' && o.value.blocks === 1)).to.have.length(1)
      const refused = outcomes.filter(o => o.status === 'rejected').map(o => (o as PromiseRejectedResult).reason)
      expect(refused).to.have.length(1)
      expect(refused[0]).to.have.property('name', 'SyncRefusedError')
    })

    it('refuses more concurrent streams per peer than its limit', async () => {
      const { streams, request } = await streamsPastLimit(2)
      const results = await Promise.all(streams.map(async s => readFrames(s, request)))
      expect(results.filter(r => r.blocks === 1 && r.ended)).to.have.length(2)
      expect(results.filter(r => r.blocks === 0 && r.error != null)).to.have.length(1)
    })
  })
})
