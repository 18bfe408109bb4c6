import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { createHeliaLight } from 'helia'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { createHeliaCRDT } from '../src/helia/index.js'
import { createReplicaNode } from '../src/node/index.js'
import { stateOf, waitFor } from './fixtures/network.js'
import { dec, enc, tempDir } from './fixtures/stores.js'
import type { HeliaCRDTDatastore } from '../src/helia/index.js'
import type { ReplicaNode } from '../src/node/index.js'

interface Peer {
  node: ReplicaNode
  store: HeliaCRDTDatastore
  dir?: string
}

const TOPIC = 'datastore-crdt-test'
const STORE_OPTIONS = { rebroadcastInterval: 500, repairInterval: 1000, dagSyncerTimeout: 10_000, numWorkers: 8 }

async function startPeer (listen: string[], dir?: string): Promise<Peer> {
  const node = await createReplicaNode({ listen, directory: dir })
  const store = await createHeliaCRDT(node, { topic: TOPIC, ...STORE_OPTIONS })
  return { node, store, dir }
}

async function stopPeer (peer: Peer): Promise<void> {
  await peer.store.stop()
  await peer.node.stop()
}

async function connect (a: Peer, b: Peer): Promise<void> {
  await a.node.libp2p.dial(b.node.libp2p.getMultiaddrs()[0])
  // gossipsub needs both sides to see the other's subscription
  await waitFor(() => a.node.libp2p.services.pubsub.getSubscribers(TOPIC).length > 0 &&
    b.node.libp2p.services.pubsub.getSubscribers(TOPIC).length > 0, 10_000, 'gossipsub subscriptions')
}

async function converge (peers: Peer[], check: (s: string[]) => boolean, timeout = 60_000): Promise<string[]> {
  let states: string[][] = []
  await waitFor(async () => {
    states = await Promise.all(peers.map(async p => stateOf(p.store)))
    const first = JSON.stringify(states[0])
    return states.every(s => JSON.stringify(s) === first) && check(states[0])
  // each check reads every store in full: polled gently, so the check does not starve the replicas it waits for
  }, timeout, 'convergence', 200).catch(err => {
    throw new Error(`${err.message}: ${states.map(s => s.length).join(', ')} keys`)
  })
  return states[0]
}

function suite (name: string, listen: (i: number) => string[], onDisk: boolean): void {
  describe(name, function () {
    this.timeout(480_000)
    let peers: Peer[] = []
    let dirs: Array<Awaited<ReturnType<typeof tempDir>>> = []

    beforeEach(async () => {
      dirs = onDisk ? await Promise.all([0, 1, 2].map(async () => tempDir('crdt-helia'))) : []
      peers = []
      for (let i = 0; i < 3; i++) peers.push(await startPeer(listen(i), dirs[i]?.path))
      await connect(peers[0], peers[1])
      await connect(peers[1], peers[2])
      await connect(peers[0], peers[2])
    })

    afterEach(async () => {
      await Promise.all(peers.map(stopPeer))
      await Promise.all(dirs.map(async d => d.remove()))
    })

    it('puts, batches and deletes on each node converge on all', async () => {
      for (const [i, p] of peers.entries()) {
        await p.store.put(new Key(`/node${i}/single`), enc(`from ${i}`))
        const batch = p.store.batch()
        for (let j = 0; j < 20; j++) batch.put(new Key(`/node${i}/batch/${j}`), enc(`${i}-${j}`))
        await batch.commit()
      }
      await converge(peers, s => s.length === 63)
      await peers[2].store.delete(new Key('/node0/single'))
      await peers[0].store.delete(new Key('/node1/batch/3'))
      const state = await converge(peers, s => s.length === 61)
      expect(state).to.include('/node2/single=from 2')
      expect(state.some(e => e.startsWith('/node0/single='))).to.equal(false)
    })

    it('a node offline for 1,000 writes catches up after it reconnects', async () => {
      const offline = peers[2]
      await stopPeer(offline)
      for (let i = 0; i < 1000; i++) await peers[0].store.put(new Key(`/many/${i}`), enc(`${i}`))
      const back = await startPeer(listen(3), offline.dir)
      peers[2] = back
      await connect(peers[0], back)
      const state = await converge(peers, s => s.length === 1000, 420_000)
      expect(state).to.include('/many/999=999')
      expect(back.store.heads()[0].height).to.equal(1000)
    })

    if (onDisk) {
      it('a node restarted from its directories keeps its data and catches up', async () => {
        await peers[2].store.put(new Key('/before'), enc('restart'))
        await converge(peers, s => s.length === 1)
        const peerId = peers[2].node.libp2p.peerId.toString()
        await stopPeer(peers[2])
        await peers[0].store.put(new Key('/while-down'), enc('missed'))
        const back = await startPeer(listen(3), peers[2].dir)
        peers[2] = back
        expect(back.node.libp2p.peerId.toString()).to.equal(peerId)
        expect(dec(await back.store.get(new Key('/before')))).to.equal('restart')
        await connect(back, peers[0])
        expect(await converge(peers, s => s.length === 2)).to.deep.equal(['/before=restart', '/while-down=missed'])
      })
    }
  })
}

describe('over real libp2p', () => {
  suite('3 Helia nodes over TCP on 127.0.0.1 with LevelDB', () => ['/ip4/127.0.0.1/tcp/0'], true)
  suite('3 Helia nodes over the memory transport', (i) => [`/memory/crdt-${i}-${Math.random().toString(36).slice(2)}`], false)

  describe('the store as the datastore of another component', function () {
    this.timeout(60_000)

    it('Helia pins kept in the CRDT store replicate to the other node', async () => {
      const a = await startPeer(['/ip4/127.0.0.1/tcp/0'])
      const b = await startPeer(['/ip4/127.0.0.1/tcp/0'])
      try {
        await connect(a, b)
        // two Helia nodes whose own datastore (pins, metadata) is the replicated store
        const bytes = enc('pinned content')
        const cid = CID.createV1(raw.code, await sha256.digest(bytes))
        const blocksA = new MemoryBlockstore()
        await blocksA.put(cid, bytes)
        const heliaA = createHeliaLight({ datastore: a.store, blockstore: blocksA })
        const heliaB = createHeliaLight({ datastore: b.store, blockstore: new MemoryBlockstore() })
        for await (const pinned of heliaA.pins.add(cid)) { expect(pinned.toString()).to.equal(cid.toString()) }
        expect(await heliaA.pins.isPinned(cid)).to.equal(true)
        // the pinned-block record and the pin record are written by separate puts
        await waitFor(async () => await heliaB.pins.isPinned(cid) && await heliaB.pins.get(cid).then(() => true, () => false), 20_000, 'the pin to replicate')
        const pins = []
        for await (const pin of heliaB.pins.ls()) pins.push(pin.cid.toString())
        expect(pins).to.deep.equal([cid.toString()])
      } finally {
        await stopPeer(a)
        await stopPeer(b)
      }
    })

    it('a replica that joins hears the heads of the others at once, not at their next rebroadcast', async () => {
      // rebroadcasts ten minutes apart: a fresh replica could only learn A's
      // head, announced before it connected, from A greeting it on joining
      const memory = (): string[] => [`/memory/greet-${Math.random().toString(36).slice(2)}`]
      const options = { topic: TOPIC, ...STORE_OPTIONS, rebroadcastInterval: 600_000 }
      const nodeA = await createReplicaNode({ listen: memory() })
      const nodeB = await createReplicaNode({ listen: memory() })
      const a: Peer = { node: nodeA, store: await createHeliaCRDT(nodeA, options) }
      const b: Peer = { node: nodeB, store: await createHeliaCRDT(nodeB, options) }
      try {
        for (let i = 0; i < 3; i++) await a.store.put(new Key(`/greet/${i}`), enc(`v${i}`))
        await connect(b, a)
        await waitFor(async () => (await stateOf(b.store)).length === 3, 20_000, 'B to learn A\'s head')
        expect(await stateOf(b.store)).to.deep.equal(await stateOf(a.store))
      } finally {
        await stopPeer(a)
        await stopPeer(b)
      }
    })

    it('a Helia node without pubsub gets a clear error', async () => {
      const helia = createHeliaLight({})
      await expect(createHeliaCRDT(helia as any, { topic: 'x' })).to.eventually.be.rejected.with.property('name', 'MissingServiceError')
    })
  })
})
