/**
 * Unit spec of what a broadcast carries besides its heads, one
 * deterministic case per edge: the hash check of a block against its CID
 * (`verifyBlock`), head blocks carried in a payload (`Head.Block`: the size
 * cap when writing them, and a receiver keeping only blocks that hash to
 * their head's CID), and the snapshot announcement (`Head.Snapshot` on the
 * first head: added only when it fits, read without ever throwing). The
 * network specs (broadcast-blocks, compaction) show the same behaviour end to
 * end; these pin the boundaries, fast enough for every mutant.
 */

import * as dagCbor from '@ipld/dag-cbor'
import { expect } from 'aegir/chai'
import { CID } from 'multiformats/cid'
import { identity } from 'multiformats/hashes/identity'
import { sha256, sha512 } from 'multiformats/hashes/sha2'
import { decodeCarriedBlocks, encodeBroadcastWithBlocks, verifyCarriedBlocks } from '../src/codec/broadcast-blocks.js'
import { addSnapshotAnnouncement, readSnapshotAnnouncement } from '../src/codec/broadcast-snapshot.js'
import { MAX_BROADCAST_HEADS, MAX_BROADCAST_SIZE, decodeBroadcastPayload } from '../src/codec/broadcast.js'
import { CRDTBroadcast } from '../src/codec/pb/broadcast.js'
import { verifyBlock } from '../src/codec/verify-block.js'
import { lenField } from './fixtures/pb-writer.js'
import type { CarriedBlock } from '../src/codec/broadcast-blocks.js'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)

/** A block of `bytes` named by a dag-pb CIDv1 over its sha2-256 digest, as replicas write them */
async function block (bytes: Uint8Array): Promise<CarriedBlock> {
  return { cid: CID.createV1(0x70, await sha256.digest(bytes)), bytes }
}

/** One Head message: Cid (1), DagName (2) and Block (100), written by hand */
function head (cid: Uint8Array, blockBytes?: Uint8Array, dagName = ''): number[] {
  return lenField(1, [
    ...lenField(1, cid),
    ...(dagName === '' ? [] : lenField(2, dagName)),
    ...(blockBytes == null ? [] : lenField(100, blockBytes))
  ])
}

function ids (blocks: CarriedBlock[]): string[] {
  return blocks.map(b => b.cid.toString())
}

describe('codecs: blocks and snapshots in broadcasts', () => {
  describe('verifyBlock', () => {
    it('accepts bytes that hash (sha2-256) to the CID and refuses any other bytes', async () => {
      const { cid, bytes } = await block(enc('node'))
      expect(await verifyBlock(cid, bytes)).to.equal(true)
      expect(await verifyBlock(cid, enc('nodf'))).to.equal(false)
      expect(await verifyBlock(cid, new Uint8Array(0))).to.equal(false)
      // a CIDv0 names the same digest
      expect(await verifyBlock(CID.createV0(cid.multihash as any), bytes)).to.equal(true)
    })

    it('refuses every hash function but sha2-256, even when its digest matches', async () => {
      const bytes = enc('node')
      expect(await verifyBlock(CID.createV1(0x70, await sha512.digest(bytes)), bytes)).to.equal(false)
      expect(await verifyBlock(CID.createV1(0x70, identity.digest(bytes)), bytes)).to.equal(false)
    })
  })

  describe('writing head blocks', () => {
    it('carries each head\'s block while the carried bytes fit the cap (exactly the cap fits), skipping those that do not', async () => {
      const a = await block(new Uint8Array(10).fill(1))
      const b = await block(new Uint8Array(25).fill(2))
      const c = await block(new Uint8Array(20).fill(3))
      const d = await block(new Uint8Array(1).fill(4))
      const heads = [a, b, c, d].map(x => ({ cid: x.cid, dagName: 'n' }))
      // a (10) fits; b would make 35 > 30; c makes exactly 30; d would make 31
      const payload = encodeBroadcastWithBlocks(heads, [a, b, c, d], 30)
      const decoded = decodeBroadcastPayload(payload)
      expect(decoded.heads.get('n')?.map(String)).to.deep.equal(ids([a, b, c, d]))
      expect(ids(decoded.blocks)).to.deep.equal(ids([a, c]))
      expect(decoded.blocks.map(x => x.bytes.byteLength)).to.deep.equal([10, 20])
    })

    it('announces a head without a block when none is given for it, and carries nothing at cap 0', async () => {
      const a = await block(enc('a'))
      const b = await block(enc('b'))
      const heads = [{ cid: a.cid, dagName: '' }, { cid: b.cid, dagName: '' }]
      expect(ids(decodeBroadcastPayload(encodeBroadcastWithBlocks(heads, [b], 100)).blocks)).to.deep.equal(ids([b]))
      const none = decodeBroadcastPayload(encodeBroadcastWithBlocks(heads, [a, b], 0))
      expect(none.blocks).to.deep.equal([])
      expect(none.heads.get('')?.map(String)).to.deep.equal(ids([a, b]))
    })
  })

  describe('reading head blocks', () => {
    it('keeps the blocks that hash to their head\'s CID; counts the others as rejected', async () => {
      const a = await block(enc('a'))
      const b = await block(enc('b'))
      const c = await block(enc('c'))
      const payload = Uint8Array.from([...head(a.cid.bytes, a.bytes), ...head(b.cid.bytes, enc('forged')), ...head(c.cid.bytes, c.bytes)])
      const carried = await decodeCarriedBlocks(payload)
      expect(ids(carried.blocks)).to.deep.equal(ids([a, c]))
      expect(carried.blocks[1].bytes).to.deep.equal(c.bytes)
      expect(carried.rejected).to.equal(1)
    })

    it('a head without a block, or with an empty one, carries nothing and is not rejected', async () => {
      const a = await block(enc('a'))
      const payload = Uint8Array.from([...head(a.cid.bytes), ...head(a.cid.bytes, new Uint8Array(0))])
      expect(await decodeCarriedBlocks(payload)).to.deep.equal({ blocks: [], rejected: 0 })
    })

    it('a block whose head CID does not decode, is empty or has bytes after the CID is rejected; a CIDv0 head is read as v1', async () => {
      const a = await block(enc('a'))
      const v0 = CID.createV0(a.cid.multihash as any)
      const payload = Uint8Array.from([
        ...head(Uint8Array.of(1, 2, 3), a.bytes),
        ...head(Uint8Array.from([...a.cid.bytes, 0]), a.bytes),
        ...head(new Uint8Array(0), a.bytes),
        ...head(v0.bytes, a.bytes)
      ])
      const carried = await decodeCarriedBlocks(payload)
      expect(carried.rejected).to.equal(3)
      expect(ids(carried.blocks)).to.deep.equal(ids([a]))
      expect(carried.blocks[0].cid.version).to.equal(1)
    })

    it('bytes that do not decode, and a payload over MAX_BROADCAST_HEADS heads, carry nothing', async () => {
      expect(await decodeCarriedBlocks(Uint8Array.of(0xff, 0xff))).to.deep.equal({ blocks: [], rejected: 0 })
      const a = await block(enc('a'))
      const one = head(a.cid.bytes, a.bytes)
      const full = Uint8Array.from(Array.from({ length: MAX_BROADCAST_HEADS }, () => one).flat())
      expect((await decodeCarriedBlocks(full)).blocks).to.have.lengthOf(MAX_BROADCAST_HEADS)
      const over = Uint8Array.from([...full, ...one])
      expect(await decodeCarriedBlocks(over)).to.deep.equal({ blocks: [], rejected: 0 })
    })

    it('skip() leaves blocks out unhashed, rejected or not; only a true answer skips', async () => {
      const a = await block(enc('a'))
      const b = await block(enc('b'))
      const c = await block(enc('c'))
      const carried = [a, { cid: b.cid, bytes: enc('forged') }, c]
      const asked: string[] = []
      const skipped = await verifyCarriedBlocks(carried, {
        skip: async cid => {
          asked.push(cid.toString())
          return !cid.equals(c.cid)
        }
      })
      expect(asked).to.deep.equal(ids([a, b, c]))
      expect(skipped).to.deep.equal({ blocks: [c], rejected: 0 })
      // a skip() answering something other than true (e.g. undefined from a loose caller) skips nothing
      const loose = await verifyCarriedBlocks(carried, { skip: () => undefined as unknown as boolean })
      expect(ids(loose.blocks)).to.deep.equal(ids([a, c]))
      expect(loose.rejected).to.equal(1)
      const payload = Uint8Array.from([...head(a.cid.bytes, a.bytes), ...head(b.cid.bytes, enc('forged'))])
      expect(await decodeCarriedBlocks(payload, { skip: cid => cid.equals(b.cid) })).to.deep.equal({ blocks: [a], rejected: 0 })
    })
  })

  describe('snapshot announcements', () => {
    const snapshotCid = async (s: string): Promise<CID> => CID.createV1(dagCbor.code, await sha256.digest(enc(s)))

    it('are added to the first head only, with the snapshot CID or empty, and read back', async () => {
      const a = await block(enc('a'))
      const b = await block(enc('b'))
      const payload = encodeBroadcastWithBlocks([{ cid: a.cid, dagName: '' }, { cid: b.cid, dagName: 'x' }], [], 0)
      expect(readSnapshotAnnouncement(payload)).to.deep.equal({ supported: false })

      const root = await snapshotCid('root')
      const withRoot = addSnapshotAnnouncement(payload, root)
      const message = CRDTBroadcast.decode(withRoot)
      expect(message.Heads[0].Snapshot).to.deep.equal(root.bytes)
      expect(message.Heads[1].Snapshot).to.equal(undefined)
      expect(message.Heads.map(h => h.DagName)).to.deep.equal(['', 'x'])
      const read = readSnapshotAnnouncement(withRoot)
      expect(read.supported).to.equal(true)
      expect(read.snapshot?.equals(root)).to.equal(true)
      // the heads are still what they were
      expect([...decodeBroadcastPayload(withRoot).heads.values()].flat().map(String)).to.deep.equal(ids([a, b]))

      const none = addSnapshotAnnouncement(payload)
      expect(CRDTBroadcast.decode(none).Heads[0].Snapshot).to.deep.equal(new Uint8Array(0))
      expect(readSnapshotAnnouncement(none)).to.deep.equal({ supported: true })
    })

    it('a payload that does not decode, or has no heads, is returned as it was', async () => {
      const root = await snapshotCid('root')
      const junk = Uint8Array.of(0xff, 0xff)
      expect(addSnapshotAnnouncement(junk, root)).to.equal(junk)
      const empty = new Uint8Array(0)
      expect(addSnapshotAnnouncement(empty, root)).to.equal(empty)
      expect(readSnapshotAnnouncement(junk)).to.deep.equal({ supported: false })
      expect(readSnapshotAnnouncement(empty)).to.deep.equal({ supported: false })
    })

    it('is left out when it would push the payload over MAX_BROADCAST_SIZE; exactly the limit is kept', async () => {
      const root = await snapshotCid('root')
      const payloadOf = async (n: number): Promise<Uint8Array> => {
        const big = await block(new Uint8Array(n).fill(7))
        return encodeBroadcastWithBlocks([{ cid: big.cid, dagName: '' }], [big], MAX_BROADCAST_SIZE)
      }
      const probe = 200_000
      const grown = addSnapshotAnnouncement(await payloadOf(probe), root).byteLength - probe
      // a block of `fits` bytes makes the announced payload exactly MAX_BROADCAST_SIZE bytes
      const fits = MAX_BROADCAST_SIZE - grown
      const atLimit = await payloadOf(fits)
      const added = addSnapshotAnnouncement(atLimit, root)
      expect(added.byteLength).to.equal(MAX_BROADCAST_SIZE)
      expect(readSnapshotAnnouncement(added).snapshot?.equals(root)).to.equal(true)
      const over = await payloadOf(fits + 1)
      expect(addSnapshotAnnouncement(over, root)).to.equal(over)
      expect(readSnapshotAnnouncement(over)).to.deep.equal({ supported: false })
    })

    it('reads as supported without a snapshot anything but a bare CIDv1 dag-cbor; a field on a later head counts for nothing', async () => {
      const a = await block(enc('a'))
      const root = await snapshotCid('root')
      const withField = (field: Uint8Array, at = 0): Uint8Array => CRDTBroadcast.encode({
        Heads: [0, 1].map(i => ({ Below: [], Cid: a.cid.bytes, DagName: '', ...(i === at ? { Snapshot: field as Uint8Array<ArrayBuffer> } : {}) }))
      })
      for (const [what, field] of [
        ['junk', Uint8Array.of(1, 2, 3)],
        ['trailing bytes', Uint8Array.from([...root.bytes, 0])],
        ['dag-pb v1', a.cid.bytes],
        ['v0', CID.createV0(a.cid.multihash as any).bytes]
      ] as const) {
        expect(readSnapshotAnnouncement(withField(field)), what).to.deep.equal({ supported: true })
      }
      expect(readSnapshotAnnouncement(withField(root.bytes)).snapshot?.toString()).to.equal(root.toString())
      expect(readSnapshotAnnouncement(withField(root.bytes, 1))).to.deep.equal({ supported: false })
    })
  })
})
