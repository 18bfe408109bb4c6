/**
 * Blocks below a head carried in a broadcast (`Head.Below`) and the
 * announce interval that produces them: a writer announces the first write
 * of a burst at once and the rest together, as their newest head carrying
 * the nodes it superseded. A receiver keeps a block below only when it
 * hashes to a link of the head's block or of one kept before it, so a
 * payload cannot plant unrelated blocks; nodes are built both by this
 * library and by hand as go-ds-crdt writes them (CIDv0 links included).
 */

import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import toBuffer from 'it-to-buffer'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { decodeCarriedBlocks, encodeBroadcastWithBlocks, verifyCarriedBlocks } from '../src/codec/broadcast-blocks.js'
import { readSnapshotAnnouncement } from '../src/codec/broadcast-snapshot.js'
import { decodeBroadcastPayload, MAX_BROADCAST_SIZE, MAX_CARRIED_BELOW } from '../src/codec/broadcast.js'
import { encodeNode } from '../src/codec/dag-node.js'
import { CRDTBroadcast } from '../src/codec/pb/broadcast.js'
import { AnnouncerBroadcaster } from './fixtures/announcer-broadcaster.js'
import { goNode } from './fixtures/go-nodes.js'
import { TestNetwork, stateOf, waitFor } from './fixtures/network.js'
import { enc, memoryReplica } from './fixtures/stores.js'
import type { NetReplica } from './fixtures/network.js'
import type { CarriedBlock } from '../src/codec/broadcast-blocks.js'

const ids = (blocks: Array<{ cid: CID }>): string[] => blocks.map(b => b.cid.toV1().toString())

/** A chain of `n` nodes written as this library writes them, oldest first: each links to the one before */
async function chain (n: number, key = '/k'): Promise<CarriedBlock[]> {
  const out: CarriedBlock[] = []
  for (let i = 0; i < n; i++) {
    const node = await encodeNode({ elements: [{ key: `${key}/${i}`, id: '', value: enc(`v${i}`) }], tombstones: [], priority: i + 1, dagName: '' }, i === 0 ? [] : [out[i - 1].cid])
    out.push(node)
  }
  return out
}

/** Records every payload `replica` broadcasts, as it sends them */
function recordBroadcasts (replica: NetReplica): Uint8Array[] {
  const payloads: Uint8Array[] = []
  const original = replica.inbox.broadcast.bind(replica.inbox)
  replica.inbox.broadcast = async (data) => { payloads.push(data); await original(data) }
  return payloads
}

/** A payload announcing `head` with its block and `below` under it, written with protons */
function payloadOf (head: CarriedBlock, below: Uint8Array[]): Uint8Array {
  return CRDTBroadcast.encode({ Heads: [{ Cid: head.cid.bytes, DagName: '', Block: head.bytes as Uint8Array<ArrayBuffer>, Below: below as Array<Uint8Array<ArrayBuffer>> }] })
}

describe('blocks below a head in broadcasts', () => {
  let net: TestNetwork | undefined

  afterEach(async () => {
    await net?.stop()
    net = undefined
  })

  describe('codec', () => {
    it('writes the blocks below a head after its block, in order, up to the first that does not fit the cap', async () => {
      const [n0, n1, n2, n3] = await chain(4)
      const sizes = [n3, n2, n1, n0].map(b => b.bytes.byteLength)
      const head = { ...n3, below: [n2.bytes, n1.bytes, n0.bytes] }
      const all = decodeBroadcastPayload(encodeBroadcastWithBlocks([{ cid: n3.cid, dagName: '' }], [head], 1 << 20))
      expect(all.blocks[0].below).to.deep.equal([n2.bytes, n1.bytes, n0.bytes])
      // room for the head and n2 exactly: n1 is left out, and so is what follows it, though an empty block would fit
      const cap = sizes[0] + sizes[1]
      const cut = decodeBroadcastPayload(encodeBroadcastWithBlocks([{ cid: n3.cid, dagName: '' }], [{ ...head, below: [n2.bytes, n1.bytes, new Uint8Array(0)] }], cap))
      expect(cut.blocks[0].below).to.deep.equal([n2.bytes])
      // the head's own block does not fit: nothing below it goes either
      const none = decodeBroadcastPayload(encodeBroadcastWithBlocks([{ cid: n3.cid, dagName: '' }], [head], sizes[0] - 1))
      expect(none.blocks).to.deep.equal([])
    })

    it('keeps a block below only when it hashes to a link of the head or of a block kept before it', async () => {
      const [n0, n1, n2, n3] = await chain(4)
      const [stranger] = await chain(1, '/other')
      const corrupted = Uint8Array.from(n1.bytes)
      corrupted[corrupted.length - 1] ^= 1
      // n1 before n2: nothing kept names it yet; the stranger is valid but linked from nothing; the corrupted copy matches no link
      const carried = await decodeCarriedBlocks(payloadOf(n3, [n1.bytes, n2.bytes, stranger.bytes, corrupted, n1.bytes, n0.bytes]))
      expect(ids(carried.blocks)).to.deep.equal(ids([n3, n2, n1, n0]))
      expect(carried.rejected).to.equal(3)
      // a block is kept once, though listed twice
      const twice = await decodeCarriedBlocks(payloadOf(n3, [n2.bytes, n2.bytes]))
      expect(ids(twice.blocks)).to.deep.equal(ids([n3, n2]))
      expect(twice.rejected).to.equal(1)
    })

    it('rejects everything below a head whose block fails its hash, and a block below that hashes to a link but is no dag-pb node', async () => {
      const [n0, n1] = await chain(2)
      const forged = await decodeCarriedBlocks(payloadOf({ cid: n1.cid, bytes: enc('forged') }, [n0.bytes]))
      expect(forged).to.deep.equal({ blocks: [], rejected: 2 })
      // a head linking to the digest of bytes that are not dag-pb: they hash right, but are refused
      const junk = Uint8Array.of(0xff, 0xff, 0xff)
      const junkCid = CID.createV1(0x70, await sha256.digest(junk))
      const head = await encodeNode({ elements: [{ key: '/j', id: '', value: enc('j') }], tombstones: [], priority: 2, dagName: '' }, [junkCid])
      const refused = await decodeCarriedBlocks(payloadOf(head, [junk]))
      expect(ids(refused.blocks)).to.deep.equal(ids([head]))
      expect(refused.rejected).to.equal(1)
    })

    it('checks go-shaped nodes, CIDv0 links included, and returns what it keeps named by CIDv1', async () => {
      const g0 = await goNode({ elements: [{ key: '/g/ü', value: 'ß' }], priority: 1 })
      const g1 = await goNode({ elements: [{ key: '/g/日本', value: '語' }], priority: 2, links: [CID.createV0(g0.cid.multihash as any)] })
      const g2 = await goNode({ elements: [{ key: '/g/😀', value: 'x' }], priority: 3, links: [g1.cid] })
      const carried = await decodeCarriedBlocks(payloadOf(g2, [g1.bytes, g0.bytes]))
      expect(ids(carried.blocks)).to.deep.equal(ids([g2, g1, g0]))
      expect(carried.blocks.every(b => b.cid.version === 1)).to.equal(true)
      expect(carried.rejected).to.equal(0)
    })

    it('leaves out what skip() picks, still following its links; a skipped head with nothing below is not hashed', async () => {
      const [n0, n1, n2] = await chain(3)
      const asked: string[] = []
      const { blocks, rejected } = await verifyCarriedBlocks([{ ...n2, below: [n1.bytes, n0.bytes] }], {
        skip: cid => {
          asked.push(cid.toV1().toString())
          return !cid.equals(n0.cid)
        }
      })
      expect(ids(blocks)).to.deep.equal(ids([n0]))
      expect(rejected).to.equal(0)
      expect(asked).to.deep.equal(ids([n2, n1, n0]))
      // a skipped head alone: its (forged) bytes are never looked at
      expect(await verifyCarriedBlocks([{ cid: n2.cid, bytes: enc('forged') }], { skip: () => true })).to.deep.equal({ blocks: [], rejected: 0 })
    })

    it(`decodes up to MAX_CARRIED_BELOW (${MAX_CARRIED_BELOW}) blocks below a head, refuses a payload with more, and never writes more`, async () => {
      const [n0, n1] = await chain(2)
      const tiny = Uint8Array.of(1)
      expect(decodeBroadcastPayload(payloadOf(n1, new Array(MAX_CARRIED_BELOW).fill(tiny))).blocks[0].below).to.have.lengthOf(MAX_CARRIED_BELOW)
      const over = payloadOf(n1, new Array(MAX_CARRIED_BELOW + 1).fill(tiny))
      expect(() => decodeBroadcastPayload(over)).to.throw().with.property('name', 'MalformedBroadcastError')
      expect(await decodeCarriedBlocks(over)).to.deep.equal({ blocks: [], rejected: 0 })
      const written = encodeBroadcastWithBlocks([{ cid: n1.cid, dagName: '' }], [{ ...n1, below: new Array(MAX_CARRIED_BELOW + 5).fill(n0.bytes) }], 1 << 20)
      expect(decodeBroadcastPayload(written).blocks[0].below).to.have.lengthOf(MAX_CARRIED_BELOW)
    })
  })

  describe('receiving', () => {
    it('stores the linked blocks a payload carries below its head and merges them without a fetch; an unrelated block is not stored', async () => {
      const [n0, n1, n2] = await chain(3)
      const [stranger] = await chain(1, '/other')
      const reader = await memoryReplica({ repairInterval: 0 })
      try {
        await reader.store.receive(payloadOf(n2, [n1.bytes, stranger.bytes, n0.bytes]))
        expect(await reader.blockstore.has(n0.cid)).to.equal(true)
        expect(await reader.blockstore.has(n1.cid)).to.equal(true)
        expect(await reader.blockstore.has(stranger.cid)).to.equal(false)
        await waitFor(async () => (await stateOf(reader.store)).length === 3, 5_000, 'the chain to merge')
        expect(await stateOf(reader.store)).to.deep.equal(['/k/0=v0', '/k/1=v1', '/k/2=v2'])
      } finally {
        await reader.store.stop()
      }
    })
  })

  describe('greeting a replica that joins', () => {
    it('carries the blocks of the heads it announces (within the cap), so the newcomer fetches none of them', async () => {
      const broadcaster = new AnnouncerBroadcaster()
      const { createCRDTDatastore } = await import('../src/index.js')
      const { MemoryDatastore } = await import('datastore-core')
      const { MemoryBlockstore } = await import('blockstore-core')
      const blockstore = new MemoryBlockstore()
      const store = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore, broadcaster }, { repairInterval: 0, rebroadcastInterval: 3_600_000, announceInterval: 0 })
      try {
        await store.put(new Key('/g/a'), enc('a'))
        await store.put(new Key('/g/b'), enc('b'), { dagName: 'other' })
        const before = broadcaster.sent.length
        broadcaster.join('newcomer')
        await waitFor(() => broadcaster.sent.length > before, 2_000, 'the greeting')
        const greeting = decodeBroadcastPayload(broadcaster.sent[before])
        const heads = store.heads()
        expect(ids(greeting.blocks).sort()).to.deep.equal(ids(heads).sort())
        for (const carried of greeting.blocks) {
          expect(carried.bytes).to.deep.equal(await toBuffer(blockstore.get(carried.cid)))
        }
      } finally {
        await store.stop()
      }
    })
  })

  describe('announceInterval', () => {
    it('announces the first write of a burst at once and the rest as one head carrying what it superseded; the reader fetches nothing', async () => {
      net = new TestNetwork({ seed: 41, init: { announceInterval: 200, rebroadcastInterval: 3_600_000 } })
      const [a, b] = await net.addMany(2)
      const payloads = recordBroadcasts(a)
      await a.store.put(new Key('/burst/0'), enc('0'))
      expect(payloads, 'the first write goes out before put() resolves').to.have.lengthOf(1)
      for (let i = 1; i < 10; i++) await a.store.put(new Key(`/burst/${i}`), enc(`${i}`))
      // the puts resolved without waiting for the interval
      expect(payloads).to.have.lengthOf(1)
      await waitFor(() => payloads.length === 2, 2_000, 'the gathered announcement')
      const last = decodeBroadcastPayload(payloads[1])
      expect(last.heads.get('')?.map(String)).to.deep.equal([a.store.heads()[0].cid.toString()])
      expect(last.blocks[0].below).to.have.lengthOf(8)
      await waitFor(async () => (await stateOf(b.store)).length === 10, 5_000, 'the burst on b')
      expect(net.fetches, 'blocks fetched').to.equal(0)
      // the interval that ended with something to say opened another; it ends with nothing and closes
      await new Promise(resolve => setTimeout(resolve, 450))
      expect(payloads).to.have.lengthOf(2)
      // after the quiet spell, a write goes out at once again
      await a.store.put(new Key('/after'), enc('quiet'))
      expect(payloads).to.have.lengthOf(3)
    })

    it('stop() announces what an open interval gathered', async () => {
      net = new TestNetwork({ seed: 42, init: { announceInterval: 60_000, rebroadcastInterval: 3_600_000 } })
      const [a, b] = await net.addMany(2)
      const payloads = recordBroadcasts(a)
      for (let i = 0; i < 3; i++) await a.store.put(new Key(`/s/${i}`), enc(`${i}`))
      expect(payloads).to.have.lengthOf(1)
      const head = a.store.heads()[0].cid.toString()
      await a.store.stop()
      expect(payloads).to.have.lengthOf(2)
      expect(decodeBroadcastPayload(payloads[1]).heads.get('')?.map(String)).to.deep.equal([head])
      await waitFor(async () => (await stateOf(b.store)).length === 3, 5_000, 'the gathered writes on b')
      expect(net.fetches).to.equal(0)
    })

    it('a gathered burst too large for one payload carries as many blocks below as fit, within the payload limit', async () => {
      // one announcement at stop(): ~900 nodes of ~400 bytes are more than a payload holds; with compaction
      // on, the payload also takes the snapshot announcement, added once it is built
      net = new TestNetwork({ seed: 44, init: { broadcastBatchDelay: 3_600_000, rebroadcastInterval: 3_600_000, compaction: { interval: 0 } } })
      const [a, b] = await net.addMany(2)
      const payloads = recordBroadcasts(a)
      const value = enc('v'.repeat(300))
      for (let i = 0; i < 900; i++) await a.store.put(new Key(`/big/${i}`), value)
      expect(payloads).to.have.lengthOf(0)
      await a.store.stop()
      expect(payloads).to.have.lengthOf(1)
      expect(payloads[0].byteLength).to.be.at.most(MAX_BROADCAST_SIZE)
      expect(readSnapshotAnnouncement(payloads[0]).supported, 'the snapshot announcement made it in').to.equal(true)
      const below = decodeBroadcastPayload(payloads[0]).blocks[0].below ?? []
      // all but the bytes the fields' tags and lengths take
      expect(below.length).to.be.within(500, 899)
      await waitFor(async () => (await stateOf(b.store)).length === 900, 10_000, 'the burst on b')
      // what the payload carried was not fetched
      expect(net.fetches).to.be.at.most(900 - below.length)
    })

    it('0 announces every write on its own; a negative interval is refused', async () => {
      net = new TestNetwork({ seed: 43, init: { announceInterval: 0, rebroadcastInterval: 3_600_000 } })
      const [a] = await net.addMany(2)
      const payloads = recordBroadcasts(a)
      for (let i = 0; i < 5; i++) await a.store.put(new Key(`/z/${i}`), enc(`${i}`))
      expect(payloads).to.have.lengthOf(5)
      const { createCRDTDatastore } = await import('../src/index.js')
      const { MemoryDatastore } = await import('datastore-core')
      const { MemoryBlockstore } = await import('blockstore-core')
      await expect(createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore: new MemoryBlockstore() }, { announceInterval: -1 })).to.eventually.be.rejected.with.property('name', 'InvalidOptionsError')
    })
  })
})
