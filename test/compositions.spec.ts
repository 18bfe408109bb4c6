/**
 * The store where a `Datastore` goes: as the datastore of a started Helia
 * node (which starts and stops it), under libp2p's peer store, and inside
 * datastore-core's wrappers. Two replicas on 127.0.0.1 over TCP; what the
 * component writes through one must reach the other.
 */

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { KeyTransformDatastore, MemoryDatastore, MountDatastore, NamespaceDatastore } from 'datastore-core'
import { createHeliaLight } from 'helia'
import { Key } from 'interface-datastore'
import { createLibp2p } from 'libp2p'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { createHeliaCRDT } from '../src/helia/index.js'
import { CRDTDatastore } from '../src/index.js'
import { createReplicaNode } from '../src/node/index.js'
import { waitFor } from './fixtures/network.js'
import { dec, enc } from './fixtures/stores.js'
import type { HeliaCRDTDatastore } from '../src/helia/index.js'
import type { ReplicaNode } from '../src/node/index.js'

interface Peer {
  node: ReplicaNode
  store: HeliaCRDTDatastore
}

const TOPIC = `compositions-${Math.random().toString(36).slice(2)}`

async function startPeer (): Promise<Peer> {
  const node = await createReplicaNode({ listen: ['/ip4/127.0.0.1/tcp/0'] })
  const store = await createHeliaCRDT(node, { topic: TOPIC, rebroadcastInterval: 300, dagSyncerTimeout: 10_000 })
  return { node, store }
}

async function rawBlock (text: string): Promise<{ cid: CID, bytes: Uint8Array }> {
  const bytes = enc(text)
  return { cid: CID.createV1(raw.code, await sha256.digest(bytes)), bytes }
}

async function replicated (store: HeliaCRDTDatastore, key: string, value?: string): Promise<void> {
  await waitFor(async () => {
    if (!(await store.has(new Key(key)))) return false
    return value == null || dec(await store.get(new Key(key))) === value
  }, 20_000, `${key} to replicate`, 20)
}

describe('the store inside other components (2 replicas on 127.0.0.1)', function () {
  this.timeout(120_000)
  let a: Peer
  let b: Peer

  beforeEach(async () => {
    a = await startPeer()
    b = await startPeer()
    await b.node.libp2p.dial(a.node.libp2p.getMultiaddrs()[0])
    await waitFor(() => a.node.libp2p.services.pubsub.getSubscribers(TOPIC).length > 0 &&
      b.node.libp2p.services.pubsub.getSubscribers(TOPIC).length > 0, 10_000, 'gossipsub subscriptions')
  })

  afterEach(async () => {
    for (const p of [a, b]) {
      await p.store.stop()
      await p.node.stop()
    }
  })

  it('is the datastore of a started Helia node: its pins replicate, and helia.stop()/start() cycle the store', async () => {
    const first = await rawBlock('pinned on A')
    const heliaA = createHeliaLight({ datastore: a.store, blockstore: new MemoryBlockstore() })
    const heliaB = createHeliaLight({ datastore: b.store, blockstore: new MemoryBlockstore() })
    // Helia starts the datastore it is given: start() on a running store must be a no-op
    await heliaA.start()
    await heliaB.start()
    await heliaA.blockstore.put(first.cid, first.bytes)
    for await (const pinned of heliaA.pins.add(first.cid)) expect(pinned.toString()).to.equal(first.cid.toString())
    await waitFor(async () => heliaB.pins.isPinned(first.cid), 20_000, 'the pin to reach B')
    // the pin record is written after the pinned-block record
    await waitFor(async () => heliaB.pins.get(first.cid).then(() => true, () => false), 20_000, 'the pin record to reach B')

    // Helia's stop() stops the store, and its start() starts it again
    await heliaA.stop()
    await expect(a.store.put(new Key('/x'), enc('x'))).to.eventually.be.rejected.with.property('name', 'DatastoreStoppedError')
    await heliaA.start()
    expect(await heliaA.pins.isPinned(first.cid)).to.equal(true)

    // the restarted store subscribed again: a pin made on B reaches it
    const second = await rawBlock('pinned on B')
    await heliaB.blockstore.put(second.cid, second.bytes)
    for await (const pinned of heliaB.pins.add(second.cid)) expect(pinned.toString()).to.equal(second.cid.toString())
    await waitFor(async () => heliaA.pins.get(second.cid).then(() => true, () => false), 20_000, 'the pin made on B to reach the restarted A')
    const pins: string[] = []
    for await (const pin of heliaA.pins.ls()) pins.push(pin.cid.toString())
    expect(pins.sort()).to.deep.equal([first.cid.toString(), second.cid.toString()].sort())

    await heliaA.stop()
    await heliaB.stop()
  })

  it('a store that was never started gives Helia an error saying to start it first', async () => {
    const store = new CRDTDatastore({ datastore: new MemoryDatastore(), blockstore: new MemoryBlockstore() })
    const helia = createHeliaLight({ datastore: store, blockstore: new MemoryBlockstore() })
    const err = await helia.start().then(() => undefined, (e: Error) => e)
    expect(err).to.have.property('name', 'DatastoreStoppedError')
    expect(err?.message).to.include('call start()')
  })

  it('holds the libp2p peer store: a peer saved through one replica is known to a libp2p node on the other', async () => {
    const makeLibp2p = async (datastore: HeliaCRDTDatastore): Promise<Awaited<ReturnType<typeof createLibp2p>>> => createLibp2p({
      datastore,
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()]
    })
    const onA = await makeLibp2p(a.store)
    const remote = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
    const addr = multiaddr('/ip4/127.0.0.1/tcp/4001')
    try {
      await onA.peerStore.save(remote, { multiaddrs: [addr], tags: { friend: { value: 50 } } })
    } finally {
      // libp2p stops the datastore it was given
      await onA.stop()
    }
    await a.store.start()
    await waitFor(async () => {
      for await (const key of b.store.queryKeys({ prefix: '/peers/' })) if (key.toString().endsWith(remote.toCID().toString())) return true
      return false
    }, 20_000, 'the peer record to replicate', 20)
    const onB = await makeLibp2p(b.store)
    try {
      const peer = await onB.peerStore.get(remote)
      expect(peer.addresses.map(a => a.multiaddr.toString())).to.deep.equal([addr.toString()])
      expect(peer.tags.get('friend')?.value).to.equal(50)
    } finally {
      await onB.stop()
    }
  })

  it('works inside NamespaceDatastore, KeyTransformDatastore and MountDatastore', async () => {
    const nsA = new NamespaceDatastore(a.store, new Key('/app'))
    const nsB = new NamespaceDatastore(b.store, new Key('/app'))
    await nsA.put(new Key('/user/1'), enc('ada'))
    await replicated(b.store, '/app/user/1', 'ada')
    expect(dec(await nsB.get(new Key('/user/1')))).to.equal('ada')
    const listed: string[] = []
    for await (const { key } of nsB.query({ prefix: '/user' })) listed.push(key.toString())
    expect(listed).to.deep.equal(['/user/1'])

    const upper = {
      convert: (key: Key) => new Key(key.toString().toUpperCase()),
      invert: (key: Key) => new Key(key.toString().toLowerCase())
    }
    await new KeyTransformDatastore(b.store, upper).put(new Key('/shout'), enc('hey'))
    await replicated(a.store, '/SHOUT', 'hey')
    expect(dec(await new KeyTransformDatastore(a.store, upper).get(new Key('/shout')))).to.equal('hey')

    const localA = new MemoryDatastore()
    const mountA = new MountDatastore([
      { prefix: new Key('/shared'), datastore: a.store },
      { prefix: new Key('/local'), datastore: localA }
    ])
    await mountA.put(new Key('/shared/doc'), enc('replicated'))
    await mountA.put(new Key('/local/doc'), enc('kept here'))
    // MountDatastore hands the whole key to the mounted store
    await replicated(b.store, '/shared/doc', 'replicated')
    expect(await localA.has(new Key('/local/doc'))).to.equal(true)
    expect(await b.store.has(new Key('/local/doc'))).to.equal(false)
    const mountB = new MountDatastore([{ prefix: new Key('/shared'), datastore: b.store }])
    expect(dec(await mountB.get(new Key('/shared/doc')))).to.equal('replicated')
    await mountB.delete(new Key('/shared/doc'))
    await waitFor(async () => !(await a.store.has(new Key('/shared/doc'))), 20_000, 'the delete to replicate', 20)
  })
})
