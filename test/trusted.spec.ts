/**
 * Trusted mode (issue #17): only replicas on the writer list change the
 * store. In-process tests drive the trust gate through `receive()` and a
 * fake broadcaster; network tests run real Helia nodes over the libp2p
 * memory transport with gossipsub (strict signing, the default), bitswap
 * and the block-sync protocol, with a rogue replica among them.
 */

import { spawn } from 'node:child_process'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import all from 'it-all'
import { promptOf } from '../src/cli/commands.js'
import { CLI_PATH } from '../src/cli/process.js'
import { encodeBroadcastWithBlocks } from '../src/codec/broadcast-blocks.js'
import { addSnapshotAnnouncement } from '../src/codec/broadcast-snapshot.js'
import { CRDTBroadcast } from '../src/codec/pb/broadcast.js'
import { createHeliaCRDT } from '../src/helia/index.js'
import { encodeBroadcast, encodeNode, parseWriter, parseWriters, signBroadcast, signedBytes, verifyBroadcast } from '../src/index.js'
import { createReplicaNode } from '../src/node/index.js'
import { signEd25519 } from '../src/trust/ed25519.js'
import { AnnouncerBroadcaster } from './fixtures/announcer-broadcaster.js'
import { stateOf, waitFor } from './fixtures/network.js'
import { enc, levelReplica, memoryReplica, readBlock, tempDir } from './fixtures/stores.js'
import { hostileServer } from './fixtures/sync-peers.js'
import type { HeliaCRDTDatastore, HeliaCRDTInit } from '../src/helia/index.js'
import type { CRDTDatastoreInit, CRDTDatastoreComponents, CRDTDatastore } from '../src/index.js'
import type { ReplicaNode } from '../src/node/index.js'
import type { Ed25519PrivateKey } from '@libp2p/interface'
import type { MemoryBlockstore } from 'blockstore-core'
import type { CID } from 'multiformats/cid'

const TOPIC = 'trusted-test'
const key = (s: string): Key => new Key(s)
const idOf = (k: Ed25519PrivateKey): string => k.publicKey.toString()

/** `signed` with its public key swapped for `victim`'s, keeping the signer's signature */
function forge (signed: Uint8Array, victim: Ed25519PrivateKey): Uint8Array {
  const msg = CRDTBroadcast.decode(signed)
  const Signature = msg.Signature?.Signature ?? new Uint8Array(64)
  return CRDTBroadcast.encode({ ...msg, Signature: { PublicKey: victim.publicKey.toMultihash().digest as Uint8Array<ArrayBuffer>, Signature } })
}

/** The error a promise rejects with; fails the test when it resolves */
async function rejection (p: Promise<unknown>): Promise<Error> {
  try {
    await p
  } catch (err: any) {
    return err
  }
  throw new Error('expected a rejection')
}

/** A stored DAG node with one put and no links */
async function storedNode (blockstore: { put(cid: CID, bytes: Uint8Array): unknown }, k: string, v: string, priority = 1): Promise<{ cid: CID, bytes: Uint8Array }> {
  const node = await encodeNode({ elements: [{ key: k, id: '', value: enc(v) }], tombstones: [], priority, dagName: '' }, [])
  await blockstore.put(node.cid, node.bytes)
  return node
}

/** A payload announcing `cid`, carrying `block` when given */
const announce = (cid: CID, block?: Uint8Array): Uint8Array => block == null
  ? encodeBroadcast([{ cid, dagName: '' }])
  : encodeBroadcastWithBlocks([{ cid, dagName: '' }], [{ cid, bytes: block }], 1 << 20)

describe('trusted writers: signatures and writer lists', function () {
  this.timeout(30_000)
  let alice: Ed25519PrivateKey
  let mallory: Ed25519PrivateKey

  before(async () => {
    alice = await generateKeyPair('Ed25519')
    mallory = await generateKeyPair('Ed25519')
  })

  it('a signed payload verifies for its topic and writer, and for nothing else', async () => {
    const cid = (await encodeNode({ elements: [], tombstones: [], priority: 1, dagName: '' }, [])).cid
    const signed = await signBroadcast(announce(cid), alice, TOPIC)
    expect(await verifyBroadcast(signed, TOPIC, id => id === idOf(alice))).to.equal(idOf(alice))
    // another topic: the domain-separated bytes differ
    await expect(verifyBroadcast(signed, 'other-topic', id => id === idOf(alice))).to.eventually.be.rejected.with.property('name', 'UntrustedBroadcastError')
    // a writer list without alice
    await expect(verifyBroadcast(signed, TOPIC, id => id === idOf(mallory))).to.be.rejectedWith(/not a writer/)
    // unsigned
    await expect(verifyBroadcast(announce(cid), TOPIC, () => true)).to.be.rejectedWith(/not signed/)
    // what WebCrypto accepts, libp2p's own verification accepts too
    const msg = CRDTBroadcast.decode(signed)
    expect(await alice.publicKey.verify(signedBytes(TOPIC, msg), msg.Signature?.Signature ?? new Uint8Array())).to.equal(true)
    // a key of another type is refused, whatever it signed
    const secp = await generateKeyPair('secp256k1')
    await expect(verifyBroadcast(await signBroadcast(announce(cid), secp, TOPIC), TOPIC, () => true)).to.be.rejectedWith(/secp256k1 key; writers use Ed25519/)
  })

  it('signs with the same bytes as the libp2p key itself (imported once into WebCrypto)', async () => {
    const data = enc('bytes a writer signs')
    const ours = await signEd25519(alice, data)
    expect(ours).to.deep.equal(await alice.sign(data))
    expect(await alice.publicKey.verify(data, ours)).to.equal(true)
    // the cached key signs again, and a second key is its own
    expect(await signEd25519(alice, data)).to.deep.equal(ours)
    expect(await signEd25519(mallory, data)).to.deep.equal(await mallory.sign(data))
  })

  it('the signature covers every announced head and the CIDs of carried blocks', async () => {
    const a = await encodeNode({ elements: [{ key: '/a', id: '', value: enc('1') }], tombstones: [], priority: 1, dagName: '' }, [])
    const b = await encodeNode({ elements: [{ key: '/b', id: '', value: enc('2') }], tombstones: [], priority: 1, dagName: '' }, [])
    const signed = CRDTBroadcast.decode(await signBroadcast(announce(a.cid), alice, TOPIC))
    const isAlice = (id: string): boolean => id === idOf(alice)
    // swap the head, keep the signature
    const swapped = CRDTBroadcast.encode({ ...signed, Heads: [{ Below: [], Cid: b.cid.bytes, DagName: '' }] })
    await expect(verifyBroadcast(swapped, TOPIC, isAlice)).to.be.rejectedWith(/does not verify/)
    // add a head
    const added = CRDTBroadcast.encode({ ...signed, Heads: [...signed.Heads, { Below: [], Cid: b.cid.bytes, DagName: '' }] })
    await expect(verifyBroadcast(added, TOPIC, isAlice)).to.be.rejectedWith(/does not verify/)
    // move the head to another DAG
    const moved = CRDTBroadcast.encode({ ...signed, Heads: [{ Below: [], Cid: a.cid.bytes, DagName: 'other' }] })
    await expect(verifyBroadcast(moved, TOPIC, isAlice)).to.be.rejectedWith(/does not verify/)
    // attach a block the writer did not carry
    const carried = CRDTBroadcast.encode({ ...signed, Heads: [{ Below: [], Cid: a.cid.bytes, DagName: '', Block: a.bytes as Uint8Array<ArrayBuffer> }] })
    await expect(verifyBroadcast(carried, TOPIC, isAlice)).to.be.rejectedWith(/does not verify/)
  })

  it('a forged payload naming a writer\'s key with another key\'s signature is refused', async () => {
    const cid = (await encodeNode({ elements: [], tombstones: [], priority: 2, dagName: '' }, [])).cid
    const forged = forge(await signBroadcast(announce(cid), mallory, TOPIC), alice)
    await expect(verifyBroadcast(forged, TOPIC, id => id === idOf(alice))).to.be.rejectedWith(/does not verify/)
  })

  it('writers are Ed25519 peer IDs, given as strings (either form), PeerIds or PublicKeys', async () => {
    const id = idOf(alice)
    expect(parseWriter(id)).to.equal(id)
    expect(parseWriter(alice.publicKey.toCID().toString())).to.equal(id)
    expect(parseWriter(alice.publicKey)).to.equal(id)
    expect(parseWriters([id, alice.publicKey, idOf(mallory)])).to.deep.equal([id, idOf(mallory)])
    const secp = await generateKeyPair('secp256k1')
    expect(() => parseWriter(secp.publicKey)).to.throw(/Ed25519/).with.property('name', 'InvalidOptionsError')
    expect(() => parseWriter('not-a-peer-id')).to.throw().with.property('name', 'InvalidOptionsError')
    expect(() => parseWriter('QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N')).to.throw(/carry its public key/)
  })
})

describe('trusted writers: one replica', function () {
  this.timeout(30_000)
  const cleanup: Array<() => Promise<void>> = []
  let alice: Ed25519PrivateKey
  let mallory: Ed25519PrivateKey
  let reader: Ed25519PrivateKey

  before(async () => {
    alice = await generateKeyPair('Ed25519')
    mallory = await generateKeyPair('Ed25519')
    reader = await generateKeyPair('Ed25519')
  })

  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn()
  })

  async function replica (init: CRDTDatastoreInit, components: Partial<CRDTDatastoreComponents> = {}): Promise<{ store: CRDTDatastore, blockstore: MemoryBlockstore, net: AnnouncerBroadcaster }> {
    const net = new AnnouncerBroadcaster()
    const r = await memoryReplica({ repairInterval: 0, headTimeout: 200, dagSyncerTimeout: 500, topic: TOPIC, ...init }, { broadcaster: net, ...components })
    cleanup.push(async () => {
      await r.store.stop()
      net.close()
    })
    return { store: r.store, blockstore: r.blockstore, net }
  }

  it('a read-only replica\'s put, delete, putMany and batch commit throw NotAWriterError and change nothing', async () => {
    const r = await replica({ writers: [idOf(alice)] }, { privateKey: reader })
    expect(r.store.stats().canWrite).to.equal(false)
    expect(r.store.stats().writers).to.deep.equal([idOf(alice)])
    const err = await rejection(r.store.put(key('/a'), enc('1')))
    expect(err.name).to.equal('NotAWriterError')
    expect(err.message).to.match(/read-only: its key \S+ is not one of the store's writers/)
    await expect(r.store.delete(key('/a'))).to.eventually.be.rejected.with.property('name', 'NotAWriterError')
    const batch = r.store.batch()
    batch.put(key('/b'), enc('2'))
    await expect(batch.commit()).to.eventually.be.rejected.with.property('name', 'NotAWriterError')
    const many = async (): Promise<void> => { await all(r.store.putMany([{ key: key('/c'), value: enc('3') }])) }
    await expect(many()).to.eventually.be.rejected.with.property('name', 'NotAWriterError')
    expect(r.store.heads()).to.have.lengthOf(0)
    expect(await stateOf(r.store)).to.deep.equal([])
    expect(r.net.sent).to.have.lengthOf(0)
  })

  it('without a private key a trusted replica is read-only, and says why', async () => {
    const r = await replica({ writers: [idOf(alice)] })
    await expect(r.store.put(key('/a'), enc('1'))).to.be.rejectedWith(/no Ed25519 private key/)
  })

  it('a writer signs what it broadcasts; open mode sends exactly the go-ds-crdt payload', async () => {
    const w = await replica({ writers: [idOf(alice)], broadcastBlocksMaxSize: 0 }, { privateKey: alice })
    await w.store.put(key('/a'), enc('1'))
    expect(w.net.sent).to.have.lengthOf(1)
    expect(await verifyBroadcast(w.net.sent[0], TOPIC, id => id === idOf(alice))).to.equal(idOf(alice))
    const open = await replica({ broadcastBlocksMaxSize: 0 }, { privateKey: alice })
    await open.store.put(key('/a'), enc('1'))
    expect(open.net.sent[0]).to.deep.equal(encodeBroadcast([{ cid: open.store.heads()[0].cid, dagName: '' }]))
    expect(CRDTBroadcast.decode(open.net.sent[0]).Signature).to.equal(undefined)
  })

  it('refuses unsigned, foreign and forged payloads at the replicator, merging nothing and storing no carried block', async () => {
    const r = await replica({ writers: [idOf(alice)] }, { privateKey: reader })
    const rogue = await encodeNode({ elements: [{ key: '/rogue', id: '', value: enc('x') }], tombstones: [], priority: 1, dagName: '' }, [])
    const unsigned = announce(rogue.cid, rogue.bytes)
    const foreign = await signBroadcast(unsigned, mallory, TOPIC)
    const forged = forge(foreign, alice)
    const otherTopic = await signBroadcast(unsigned, alice, 'another-topic')
    for (const payload of [unsigned, foreign, forged, otherTopic]) await r.store.receive(payload)
    r.net.deliver(foreign, 'mallory')
    await waitFor(() => r.store.stats().rejectedBroadcasts === 5, 5000, 'five refusals')
    await r.store.synced()
    expect(await stateOf(r.store)).to.deep.equal([])
    expect(r.store.heads()).to.have.lengthOf(0)
    // the carried block was not stored either
    expect(await r.blockstore.has(rogue.cid)).to.equal(false)
  })

  it('a writer\'s signed payload merges; replaying it later changes nothing', async () => {
    const r = await replica({ writers: [idOf(alice)] }, { privateKey: reader })
    const node = await encodeNode({ elements: [{ key: '/a', id: '', value: enc('1') }], tombstones: [], priority: 1, dagName: '' }, [])
    const signed = await signBroadcast(announce(node.cid, node.bytes), alice, TOPIC)
    await r.store.receive(signed)
    expect(await stateOf(r.store)).to.deep.equal(['/a=1'])
    const heads = r.store.heads().map(h => h.cid.toString())
    for (let i = 0; i < 3; i++) await r.store.receive(signed)
    expect(await stateOf(r.store)).to.deep.equal(['/a=1'])
    expect(r.store.heads().map(h => h.cid.toString())).to.deep.equal(heads)
    expect(r.store.stats().rejectedBroadcasts).to.equal(0)
  })

  it('a carried block that does not match its CID is dropped, even in a validly signed payload', async () => {
    const r = await replica({ writers: [idOf(alice)] }, { privateKey: reader })
    const node = await encodeNode({ elements: [{ key: '/a', id: '', value: enc('1') }], tombstones: [], priority: 1, dagName: '' }, [])
    const junk = (await encodeNode({ elements: [{ key: '/rogue', id: '', value: enc('x') }], tombstones: [], priority: 1, dagName: '' }, [])).bytes
    // the signature covers the head's CID, not the carried bytes: a relay can swap them, and the hash check catches it
    const signed = await signBroadcast(announce(node.cid, node.bytes), alice, TOPIC)
    const msg = CRDTBroadcast.decode(signed)
    const swapped = CRDTBroadcast.encode({ ...msg, Heads: [{ ...msg.Heads[0], Block: junk as Uint8Array<ArrayBuffer> }] })
    await expect(verifyBroadcast(swapped, TOPIC, id => id === idOf(alice))).to.eventually.equal(idOf(alice))
    await r.store.receive(swapped)
    expect(await r.blockstore.has(node.cid)).to.equal(false)
    expect(await stateOf(r.store)).to.deep.equal([])
    await r.store.receive(signed)
    expect(await stateOf(r.store)).to.deep.equal(['/a=1'])
    expect(await readBlock(r.blockstore, node.cid)).to.deep.equal(node.bytes)
  })

  it('setWriters is persisted, wins over init.writers at the next start, and revokes at once', async () => {
    const dir = await tempDir('trusted-writers')
    cleanup.push(async () => { await dir.remove() })
    let r = await levelReplica(dir.path, { writers: [idOf(alice), idOf(mallory)], topic: TOPIC, repairInterval: 0 }, { privateKey: reader })
    const before = await encodeNode({ elements: [{ key: '/before', id: '', value: enc('1') }], tombstones: [], priority: 1, dagName: '' }, [])
    await r.store.receive(await signBroadcast(announce(before.cid, before.bytes), mallory, TOPIC))
    expect(await stateOf(r.store)).to.deep.equal(['/before=1'])
    await r.store.setWriters([idOf(alice)])
    expect(r.store.stats().writers).to.deep.equal([idOf(alice)])
    const after = await encodeNode({ elements: [{ key: '/after', id: '', value: enc('2') }], tombstones: [], priority: 2, dagName: '' }, [before.cid])
    await r.store.receive(await signBroadcast(announce(after.cid, after.bytes), mallory, TOPIC))
    // what mallory wrote before stays; what it signs now is refused
    expect(await stateOf(r.store)).to.deep.equal(['/before=1'])
    expect(r.store.stats().rejectedBroadcasts).to.equal(1)
    await r.store.stop()
    await r.close()
    r = await levelReplica(dir.path, { writers: [idOf(alice), idOf(mallory)], topic: TOPIC, repairInterval: 0 }, { privateKey: reader })
    cleanup.push(async () => { await r.store.stop(); await r.close() })
    expect(r.store.stats().writers).to.deep.equal([idOf(alice)])
    await r.store.receive(await signBroadcast(announce(after.cid, after.bytes), mallory, TOPIC))
    expect(await stateOf(r.store)).to.deep.equal(['/before=1'])
    // the stored list lives outside the user's keys
    expect((await stateOf(r.store)).some(s => s.includes('tw'))).to.equal(false)
  })

  it('a payload the transport checked is not verified again, but a writer revoked in between is still refused', async () => {
    const r = await replica({ writers: [idOf(alice), idOf(mallory)] }, { privateKey: reader })
    const node = await encodeNode({ elements: [{ key: '/m', id: '', value: enc('1') }], tombstones: [], priority: 1, dagName: '' }, [])
    const signed = await signBroadcast(announce(node.cid, node.bytes), mallory, TOPIC)
    expect(await r.store.admitsBroadcast(signed)).to.equal(true)
    await r.store.setWriters([idOf(alice)])
    await r.store.receive(signed)
    expect(r.store.stats().rejectedBroadcasts).to.equal(1)
    expect(await stateOf(r.store)).to.deep.equal([])
    // in open mode every payload passes
    await r.store.setWriters(null)
    expect(await r.store.admitsBroadcast(announce(node.cid))).to.equal(true)
    expect(r.store.stats().writers).to.equal(undefined)
  })

  describe('installSnapshot', () => {
    /** An open replica's snapshot of two keys, in a blockstore the replica under test shares */
    async function source (): Promise<{ blockstore: MemoryBlockstore, snapshot: CID, head: CID }> {
      const src = await memoryReplica({ repairInterval: 0 })
      cleanup.push(async () => { await src.store.stop() })
      await src.store.put(key('/s1'), enc('one'))
      await src.store.put(key('/s2'), enc('two'))
      return { blockstore: src.blockstore, snapshot: await src.store.snapshot(), head: src.store.heads()[0].cid }
    }

    it('open mode installs any snapshot it is given', async () => {
      const { blockstore, snapshot } = await source()
      const r = await replica({}, { blockstore })
      await r.store.installSnapshot(snapshot)
      expect(await stateOf(r.store)).to.deep.equal(['/s1=one', '/s2=two'])
    })

    it('trusted mode installs only what a current writer announced, signed, or what it made itself', async () => {
      const { blockstore, snapshot, head } = await source()
      const r = await replica({ writers: [idOf(alice)] }, { privateKey: reader, blockstore })
      // never announced: refused before anything is fetched, nothing changes
      const err = await rejection(r.store.installSnapshot(snapshot))
      expect(err.name).to.equal('UntrustedSnapshotError')
      expect(err.message).to.include(snapshot.toString())
      expect(await stateOf(r.store)).to.deep.equal([])
      // announced by a foreign key: the payload is refused, so is the snapshot
      await r.store.receive(await signBroadcast(addSnapshotAnnouncement(announce(head), snapshot), mallory, TOPIC))
      expect(r.store.stats().rejectedBroadcasts).to.equal(1)
      expect((await rejection(r.store.installSnapshot(snapshot))).name).to.equal('UntrustedSnapshotError')
      // announced by a writer (and admitted): the local call installs it
      await r.store.receive(await signBroadcast(addSnapshotAnnouncement(announce(head), snapshot), alice, TOPIC))
      await r.store.installSnapshot(snapshot)
      expect(await stateOf(r.store)).to.deep.equal(['/s1=one', '/s2=two'])
      // the writer revoked: what it announced is no longer installed
      await r.store.setWriters([idOf(mallory)])
      const revoked = await rejection(r.store.installSnapshot(snapshot))
      expect(revoked.name).to.equal('UntrustedSnapshotError')
      expect(revoked.message).to.include('no longer a writer')
      // a snapshot the replica made from its own state is always its own to install
      const own = await r.store.snapshot()
      await r.store.installSnapshot(own)
    })
  })

  it('setWriters refuses a bad list and keeps the old one', async () => {
    const r = await replica({ writers: [idOf(alice)] }, { privateKey: alice })
    await expect(r.store.setWriters(['junk'])).to.eventually.be.rejected.with.property('name', 'InvalidOptionsError')
    expect(r.store.stats().writers).to.deep.equal([idOf(alice)])
    await expect(memoryReplica({ writers: ['junk'] })).to.eventually.be.rejected.with.property('name', 'InvalidOptionsError')
  })
})

describe('trusted writers: replicas over libp2p (memory transport)', function () {
  this.timeout(60_000)
  const STORE: Partial<HeliaCRDTInit> = { rebroadcastInterval: 500, repairInterval: 1000, dagSyncerTimeout: 10_000, headTimeout: 5000 }
  let seq = 0
  const cleanup: Array<() => Promise<void>> = []

  after(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn()
  })

  interface Peer { key: Ed25519PrivateKey, node: ReplicaNode, store: HeliaCRDTDatastore }

  async function peer (init: Partial<HeliaCRDTInit>, privateKey?: Ed25519PrivateKey, extra?: (node: ReplicaNode) => Promise<void>): Promise<Peer> {
    const k = privateKey ?? await generateKeyPair('Ed25519')
    const node = await createReplicaNode({ listen: [`/memory/trusted-${process.pid}-${seq++}`], privateKey: k })
    await extra?.(node)
    const store = await createHeliaCRDT(node, { topic: TOPIC, ...STORE, ...init })
    cleanup.push(async () => { await store.stop(); await node.stop() })
    return { key: k, node, store }
  }

  async function link (a: Peer, b: Peer): Promise<void> {
    await a.node.libp2p.dial(b.node.libp2p.getMultiaddrs()[0])
    await waitFor(() => a.node.libp2p.services.pubsub.getSubscribers(TOPIC).some(p => p.equals(b.node.libp2p.peerId)) &&
      b.node.libp2p.services.pubsub.getSubscribers(TOPIC).some(p => p.equals(a.node.libp2p.peerId)), 10_000, 'subscriptions')
  }

  const has = async (p: Peer, entry: string): Promise<boolean> => (await stateOf(p.store)).includes(entry)

  describe('two writers, a reader and a rogue', () => {
    let alice: Peer
    let bob: Peer
    let reader: Peer
    let mallory: Peer

    before(async () => {
      const aliceKey = await generateKeyPair('Ed25519')
      const bobKey = await generateKeyPair('Ed25519')
      const writers = [idOf(aliceKey), idOf(bobKey)]
      alice = await peer({ writers, privateKey: aliceKey }, aliceKey)
      bob = await peer({ writers, privateKey: bobKey }, bobKey)
      reader = await peer({ writers })
      // the rogue runs an open-mode store on the same topic
      mallory = await peer({})
      for (const [a, b] of [[alice, bob], [alice, reader], [bob, reader], [mallory, reader], [mallory, alice]] as Array<[Peer, Peer]>) await link(a, b)
    })

    it('writes of writers reach every replica; the reader is read-only but replicates', async () => {
      await alice.store.put(key('/alice'), enc('1'))
      await bob.store.put(key('/bob'), enc('2'))
      for (const p of [alice, bob, reader]) {
        await waitFor(async () => await has(p, '/alice=1') && await has(p, '/bob=2'), 20_000, 'both writes everywhere')
      }
      expect(reader.store.stats().canWrite).to.equal(false)
      await expect(reader.store.put(key('/reader'), enc('x'))).to.eventually.be.rejected.with.property('name', 'NotAWriterError')
      expect(reader.store.stats().writers).to.have.members([idOf(alice.key), idOf(bob.key)])
    })

    it('a rogue replica\'s writes are rejected by the topic validator and merged nowhere', async () => {
      const refusedBefore = reader.store.broadcaster.refused ?? 0
      await mallory.store.put(key('/rogue'), enc('evil'))
      const rogueHead = mallory.store.heads()[0].cid
      await waitFor(() => (reader.store.broadcaster.refused ?? 0) > refusedBefore && (alice.store.broadcaster.refused ?? 0) > 0, 20_000, 'the rogue payload to be refused')
      // a later honest write arrives; the rogue one never does
      await alice.store.put(key('/after-rogue'), enc('1'))
      for (const p of [alice, bob, reader]) {
        await waitFor(async () => has(p, '/after-rogue=1'), 20_000, 'the honest write')
        expect(await has(p, '/rogue=evil')).to.equal(false)
        expect(await p.node.blockstore.has(rogueHead)).to.equal(false)
        expect(await p.store.hasMerged(rogueHead)).to.equal(false)
      }
    })

    it('a forged broadcast naming a writer\'s key is rejected; a replayed one is harmless', async () => {
      const node = await encodeNode({ elements: [{ key: '/forged', id: '', value: enc('evil') }], tombstones: [], priority: 99, dagName: '' }, [])
      await mallory.node.blockstore.put(node.cid, node.bytes)
      const forged = forge(await signBroadcast(announce(node.cid, node.bytes), mallory.key, TOPIC), alice.key)
      const refusedBefore = reader.store.broadcaster.refused ?? 0
      await mallory.node.libp2p.services.pubsub.publish(TOPIC, forged)
      await waitFor(() => (reader.store.broadcaster.refused ?? 0) > refusedBefore, 20_000, 'the forgery to be refused')

      // replay: alice's own earlier head, signed by alice, published again by mallory
      const aliceHead = alice.store.heads()[0]
      const old = await signBroadcast(encodeBroadcast([{ cid: aliceHead.cid, dagName: '' }]), alice.key, TOPIC)
      const stateBefore = await stateOf(reader.store)
      const receivedBefore = reader.store.stats().receivedBroadcasts
      await mallory.node.libp2p.services.pubsub.publish(TOPIC, old)
      await waitFor(() => reader.store.stats().receivedBroadcasts > receivedBefore, 20_000, 'the replay to be delivered')
      await reader.store.synced()
      expect(await stateOf(reader.store)).to.deep.equal(stateBefore)
      expect(await has(reader, '/forged=evil')).to.equal(false)
      expect(await reader.node.blockstore.has(node.cid)).to.equal(false)
    })

    it('revocation mid-run: what the revoked writer wrote stays, what it writes next is refused', async () => {
      await bob.store.put(key('/bob-before'), enc('1'))
      for (const p of [alice, reader]) await waitFor(async () => has(p, '/bob-before=1'), 20_000, 'bob\'s write before revocation')
      await alice.store.setWriters([idOf(alice.key)])
      await reader.store.setWriters([idOf(alice.key)])
      const refusedBefore = reader.store.broadcaster.refused ?? 0
      // bob does not know: it still signs as a writer
      await bob.store.put(key('/bob-after'), enc('2'))
      expect(bob.store.heads()).to.have.lengthOf(1)
      const bobHead = bob.store.heads()[0].cid
      await waitFor(() => (reader.store.broadcaster.refused ?? 0) > refusedBefore, 20_000, 'bob\'s new payload to be refused')
      await alice.store.put(key('/alice-after'), enc('3'))
      await waitFor(async () => has(reader, '/alice-after=3'), 20_000, 'alice\'s write after revocation')
      for (const p of [alice, reader]) {
        expect(await has(p, '/bob-before=1')).to.equal(true)
        expect(await has(p, '/bob-after=2')).to.equal(false)
        expect(await p.store.hasMerged(bobHead)).to.equal(false)
      }
    })
  })

  it('foreign blocks streamed through the sync protocol are cut off; the reader keeps only what accepted heads reach', async () => {
    const aliceKey = await generateKeyPair('Ed25519')
    const writers = [idOf(aliceKey)]
    // alice carries no blocks in her broadcasts, so the reader must fetch every one
    const alice = await peer({ writers, privateKey: aliceKey, syncProtocol: false, broadcastBlocksMaxSize: 0 }, aliceKey)
    // mallory relays alice's heads (it is a read-only trusted replica, so it follows alice) but
    // answers every sync request with a block of its own rogue DAG
    let rogue: { cid: CID, bytes: Uint8Array } | undefined
    const mallory = await peer({ writers, syncProtocol: false }, undefined, async node => {
      rogue = await storedNode(node.blockstore, '/rogue', 'evil', 50)
      await hostileServer(node, 'unrequested', {
        get: async cid => readBlock(node.blockstore as any, cid),
        other: rogue.cid
      })
    })
    const reader = await peer({ writers, syncProtocol: { idleTimeout: 500 } })
    await link(alice, mallory)
    await link(mallory, reader)
    for (let i = 0; i < 5; i++) await alice.store.put(key(`/a/${i}`), enc(`${i}`))
    await waitFor(async () => (await stateOf(reader.store)).length === 5, 30_000, 'the reader to catch up through mallory', 100)
    expect(await stateOf(reader.store)).to.deep.equal(await stateOf(alice.store))
    expect(reader.store.sync?.blockstore.stats.cut).to.be.at.least(1)
    expect(await reader.node.blockstore.has(rogue?.cid as CID)).to.equal(false)
    expect(await has(reader, '/rogue=evil')).to.equal(false)
  })
})

describe('trusted writers: the command line', function () {
  // each run starts a whole replica process: slow on a loaded machine
  this.timeout(180_000)

  async function cli (dir: string, args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> {
    const child = spawn(process.execPath, [CLI_PATH, '--data', dir, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', d => { stdout += String(d) })
    child.stderr.on('data', d => { stderr += String(d) })
    const code = await new Promise<number | null>(resolve => child.on('close', resolve))
    return { code, stdout, stderr }
  }

  it('--writer makes a replica read-only unless it names it; the list is stored; whoami says so', async () => {
    const dir = await tempDir('trusted-cli')
    try {
      const other = idOf(await generateKeyPair('Ed25519'))
      const ro = JSON.parse((await cli(dir.path, ['--writer', other, '--json', 'whoami'])).stdout)
      expect(ro).to.deep.include({ mode: 'trusted', canWrite: false, writers: [other] })
      expect(ro.peerId).to.match(/^12D3KooW/)
      // no --writer this time: the stored list still holds
      const put = await cli(dir.path, ['put', '/a', '1'])
      expect(put.code).to.equal(1)
      expect(put.stderr).to.include(`NotAWriterError: This replica is read-only: its key ${String(ro.peerId)} is not one of the store's writers`)

      const rw = await cli(dir.path, ['--writer', other, '--writer', ro.peerId, '--json', 'put', '/a', '1'])
      expect(rw.code).to.equal(0)
      expect(JSON.parse(rw.stdout.split('\n')[0])).to.include({ ok: true, key: '/a' })

      const bad = await cli(dir.path, ['--writer', 'junk', 'whoami'])
      expect(bad.code).to.equal(2)
      expect(bad.stderr).to.match(/--writer: Not a peer ID/)
    } finally {
      await dir.remove()
    }
  })

  it('the shell prompt shows a read-only replica', () => {
    expect(promptOf({ stats: () => ({ canWrite: true }) } as any)).to.equal('crdt> ')
    expect(promptOf({ stats: () => ({ canWrite: false }) } as any)).to.equal('crdt (read-only)> ')
  })
})
