/**
 * Edges of the codecs that the codecs mutation run at 40b54e4 found
 * unchecked by the in-process specs: the split of heads into broadcasts
 * (head, DAG-name and byte limits, the reserve), the size, name and CID
 * limits of an incoming broadcast and its error texts, carried blocks that
 * are empty, the link limit and unusable (non-sha2-256) links of a dag-pb
 * node and their count, the DAG-name byte limit of a delta, the snapshot
 * field of a broadcast over the head limit, and block keys of large inputs.
 * Every case here failed on a bug planted in the code it pins.
 */

import * as dagPB from '@ipld/dag-pb'
import { expect } from 'aegir/chai'
import { base32upper } from 'multiformats/bases/base32'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { sha256, sha512 } from 'multiformats/hashes/sha2'
import { base32UpperKey } from '../src/codec/block-key.js'
import { addSnapshotAnnouncement, readSnapshotAnnouncement } from '../src/codec/broadcast-snapshot.js'
import { MAX_BROADCAST_DAG_NAMES, MAX_BROADCAST_DAG_NAME_LENGTH, MAX_BROADCAST_HEADS, MAX_BROADCAST_SIZE, decodeBroadcastPayload, splitBroadcast } from '../src/codec/broadcast.js'
import { MAX_NODE_LINKS, decodeNode, encodeNode } from '../src/codec/dag-node.js'
import { MAX_DAG_NAME_BYTES, canonicalDagName } from '../src/codec/delta.js'
import { CRDTBroadcast } from '../src/codec/pb/broadcast.js'
import type { BroadcastHead } from '../src/codec/broadcast.js'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)

/** A dag-pb CID over sha2-256 of `s` */
async function pbCid (s: string): Promise<CID> {
  return CID.createV1(0x70, await sha256.digest(enc(s)))
}

async function cids (n: number, tag = 'c'): Promise<CID[]> {
  return Promise.all(Array.from({ length: n }, async (_, i) => pbCid(`${tag}${i}`)))
}

function caught (fn: () => unknown): Error & { name: string } {
  try {
    fn()
  } catch (err: any) {
    return err
  }
  throw new Error('expected an error')
}

/** The heads of each payload, as `dagName:cid` */
function payloads (out: Uint8Array[]): string[][] {
  return out.map(p => [...decodeBroadcastPayload(p).heads.entries()].flatMap(([name, list]) => list.map(c => `${name}:${c.toString()}`)))
}

describe('codecs: edges a mutation run found', () => {
  describe('splitBroadcast', () => {
    it('nothing to send is no payload; heads fit in one payload keep their order', async () => {
      expect(splitBroadcast([])).to.deep.equal([])
      const heads = (await cids(3)).map((cid, i) => ({ cid, dagName: i === 1 ? 'x' : '' }))
      expect(payloads(splitBroadcast(heads))).to.deep.equal([[`:${heads[0].cid}`, `:${heads[2].cid}`, `x:${heads[1].cid}`]])
    })

    it('starts a payload after MAX_BROADCAST_HEADS heads', async () => {
      const heads = (await cids(MAX_BROADCAST_HEADS + 1)).map(cid => ({ cid, dagName: '' }))
      expect(payloads(splitBroadcast(heads)).map(p => p.length)).to.deep.equal([MAX_BROADCAST_HEADS, 1])
    })

    it('starts a payload at the DAG name past MAX_BROADCAST_DAG_NAMES, not at a name already in it', async () => {
      const list = await cids(MAX_BROADCAST_DAG_NAMES + 2)
      const heads: BroadcastHead[] = list.slice(0, MAX_BROADCAST_DAG_NAMES).map((cid, i) => ({ cid, dagName: `d${i}` }))
      // a name already in the payload does not split it
      heads.push({ cid: list[MAX_BROADCAST_DAG_NAMES], dagName: 'd0' })
      expect(payloads(splitBroadcast(heads)).map(p => p.length)).to.deep.equal([MAX_BROADCAST_DAG_NAMES + 1])
      heads.push({ cid: list[MAX_BROADCAST_DAG_NAMES + 1], dagName: 'new' })
      expect(payloads(splitBroadcast(heads)).map(p => p.length)).to.deep.equal([MAX_BROADCAST_DAG_NAMES + 1, 1])
    })

    it('leaves out heads whose DAG name is over MAX_BROADCAST_DAG_NAME_LENGTH, keeps one exactly at it', async () => {
      const [a, b] = await cids(2)
      const at = 'n'.repeat(MAX_BROADCAST_DAG_NAME_LENGTH)
      const out = splitBroadcast([{ cid: a, dagName: at }, { cid: b, dagName: at + 'n' }])
      expect(payloads(out)).to.deep.equal([[`${at}:${a}`]])
    })

    it('splits on bytes: each head counts its encoded size (tag, length, CID and name fields), up to MAX_BROADCAST_SIZE - reserve', async () => {
      const heads = (await cids(10)).map(cid => ({ cid, dagName: 'x' }))
      // 2 + (2 + 36) + (2 + 1) bytes a head: 10 heads are 430 bytes
      expect(payloads(splitBroadcast(heads, MAX_BROADCAST_SIZE - 430)).map(p => p.length)).to.deep.equal([10])
      expect(payloads(splitBroadcast(heads, MAX_BROADCAST_SIZE - 429)).map(p => p.length)).to.deep.equal([9, 1])
      expect(payloads(splitBroadcast(heads, MAX_BROADCAST_SIZE - 86)).map(p => p.length)).to.deep.equal([2, 2, 2, 2, 2])
      for (const reserve of [MAX_BROADCAST_SIZE - 430, MAX_BROADCAST_SIZE - 429, MAX_BROADCAST_SIZE - 86]) {
        for (const p of splitBroadcast(heads, reserve)) expect(p.byteLength).to.be.at.most(MAX_BROADCAST_SIZE - reserve)
      }
    })

    it('counts a two-byte length from a Head of exactly 128 bytes (an 88-byte name with a 36-byte CID)', async () => {
      const heads = (await cids(10)).map(cid => ({ cid, dagName: 'm'.repeat(88) }))
      // 1 + 2 + 128 bytes a head: 10 heads are 1,310 bytes
      expect(payloads(splitBroadcast(heads, MAX_BROADCAST_SIZE - 1310)).map(p => p.length)).to.deep.equal([10])
      expect(payloads(splitBroadcast(heads, MAX_BROADCAST_SIZE - 1309)).map(p => p.length)).to.deep.equal([9, 1])
    })

    it('heads with long DAG names (a Head of 128 bytes or more takes a two-byte length) still make payloads every replica accepts (regression: one byte a head went uncounted, and 4,000 heads under a 256-character name made payloads of 262,800 bytes, all refused)', async () => {
      const list = await cids(4000)
      for (const name of ['n'.repeat(MAX_BROADCAST_DAG_NAME_LENGTH), 'é'.repeat(MAX_BROADCAST_DAG_NAME_LENGTH), '😀'.repeat(MAX_BROADCAST_DAG_NAME_LENGTH / 2)]) {
        const out = splitBroadcast(list.map(cid => ({ cid, dagName: name })))
        for (const p of out) expect(p.byteLength).to.be.at.most(MAX_BROADCAST_SIZE)
        expect(payloads(out).flat()).to.deep.equal(list.map(cid => `${name}:${cid}`))
      }
    })
  })

  describe('incoming broadcasts', () => {
    /** One head carrying a block of `n` bytes: a payload whose size is chosen byte by byte */
    async function payloadOf (size: number): Promise<Uint8Array> {
      const cid = await pbCid('sized')
      for (let n = size - 60; n < size; n++) {
        const out = CRDTBroadcast.encode({ Heads: [{ Below: [], Cid: cid.bytes, DagName: '', Block: new Uint8Array(n) }] })
        if (out.byteLength === size) return out
      }
      throw new Error(`no payload of ${size} bytes`)
    }

    it('refuses a payload over MAX_BROADCAST_SIZE bytes, saying so; one exactly at it is read', async () => {
      expect(decodeBroadcastPayload(await payloadOf(MAX_BROADCAST_SIZE)).heads.size).to.equal(1)
      const over = caught(() => decodeBroadcastPayload(new Uint8Array(MAX_BROADCAST_SIZE + 1)))
      expect(over.name).to.equal('MalformedBroadcastError')
      expect(over.message).to.equal(`Broadcast of ${MAX_BROADCAST_SIZE + 1} bytes exceeds the limit of ${MAX_BROADCAST_SIZE}`)
    })

    it('says what the protobuf decoder said of a payload that does not decode', () => {
      const junk = Uint8Array.of(0xff)
      const protons = caught(() => CRDTBroadcast.decode(junk))
      expect(caught(() => decodeBroadcastPayload(junk)).message).to.equal(`Broadcast does not decode: ${protons.message}`)
    })

    it('refuses a DAG name over MAX_BROADCAST_DAG_NAME_LENGTH and more than MAX_BROADCAST_DAG_NAMES names, reading the limits themselves', async () => {
      const list = await cids(MAX_BROADCAST_DAG_NAMES + 1)
      const at = 'n'.repeat(MAX_BROADCAST_DAG_NAME_LENGTH)
      expect([...decodeBroadcastPayload(CRDTBroadcast.encode({ Heads: [{ Below: [], Cid: list[0].bytes, DagName: at }] })).heads.keys()]).to.deep.equal([at])
      const long = caught(() => decodeBroadcastPayload(CRDTBroadcast.encode({ Heads: [{ Below: [], Cid: list[0].bytes, DagName: '' }, { Below: [], Cid: list[1].bytes, DagName: at + 'n' }] })))
      expect(long.message).to.equal(`Broadcast head 1 has a DAG name longer than ${MAX_BROADCAST_DAG_NAME_LENGTH} characters`)
      const names = (n: number): Uint8Array => CRDTBroadcast.encode({ Heads: list.slice(0, n).map((cid, i) => ({ Below: [], Cid: cid.bytes, DagName: `d${i}` })) })
      expect(decodeBroadcastPayload(names(MAX_BROADCAST_DAG_NAMES)).heads.size).to.equal(MAX_BROADCAST_DAG_NAMES)
      expect(caught(() => decodeBroadcastPayload(names(MAX_BROADCAST_DAG_NAMES + 1))).message).to.equal(`Broadcast names more than ${MAX_BROADCAST_DAG_NAMES} DAGs`)
    })

    it('a head CID over sha2-512, too long to be one, or followed by a byte is refused with the matching text', async () => {
      const text = async (bytes: Uint8Array): Promise<string> => caught(() => decodeBroadcastPayload(CRDTBroadcast.encode({ Heads: [{ Below: [], Cid: bytes as Uint8Array<ArrayBuffer>, DagName: '' }] }))).message
      const notUsable = 'Broadcast head 0 is not a dag-pb node named by a 32-byte sha2-256 digest'
      const notCid = 'Broadcast head 0 is not a valid binary CID'
      // sha2-512 with a 32-byte digest: 36 bytes, a CID, but not one to fetch
      expect(await text(CID.createV1(0x70, Digest.create(sha512.code, new Uint8Array(32))).bytes)).to.equal(notUsable)
      // 38 bytes (sha2-256 code, 34-byte digest): still decoded, then refused as unusable
      expect(await text(CID.createV1(0x70, Digest.create(sha256.code, new Uint8Array(34))).bytes)).to.equal(notUsable)
      // 39 bytes and more are no head CID at all
      expect(await text(CID.createV1(0x70, Digest.create(sha256.code, new Uint8Array(35))).bytes)).to.equal(notCid)
      expect(await text(CID.createV1(0x70, await sha512.digest(enc('x'))).bytes)).to.equal(notCid)
      expect(await text(Uint8Array.from([...(await pbCid('a')).bytes, 0]))).to.equal(notCid)
    })

    it('an empty carried block is no block', async () => {
      const [a, b] = await cids(2)
      const decoded = decodeBroadcastPayload(CRDTBroadcast.encode({ Heads: [{ Below: [], Cid: a.bytes, DagName: '', Block: new Uint8Array(0) }, { Below: [], Cid: b.bytes, DagName: '', Block: Uint8Array.of(1) }] }))
      expect(decoded.blocks.map(x => x.cid.toString())).to.deep.equal([b.toString()])
    })
  })

  describe('snapshot field of a broadcast over the head limit', () => {
    it('is neither added to nor read from a payload of more than MAX_BROADCAST_HEADS heads', async () => {
      const list = await cids(MAX_BROADCAST_HEADS + 1)
      const snapshot = CID.createV1(0x71, await sha256.digest(enc('snap')))
      const over = CRDTBroadcast.encode({ Heads: list.map(cid => ({ Below: [], Cid: cid.bytes, DagName: '' })) })
      expect(addSnapshotAnnouncement(over, snapshot)).to.equal(over)
      const withField = CRDTBroadcast.encode({ Heads: list.map((cid, i) => ({ Below: [], Cid: cid.bytes, DagName: '', ...(i === 0 ? { Snapshot: snapshot.bytes } : {}) })) })
      expect(readSnapshotAnnouncement(withField)).to.deep.equal({ supported: false })
      // at the limit both work
      const at = CRDTBroadcast.encode({ Heads: list.slice(1).map(cid => ({ Below: [], Cid: cid.bytes, DagName: '' })) })
      expect(readSnapshotAnnouncement(addSnapshotAnnouncement(at, snapshot)).snapshot?.toString()).to.equal(snapshot.toString())
    })
  })

  describe('dag-pb nodes', () => {
    it('links over sha2-512 are left out and counted; a node without them counts none', async () => {
      const good = await pbCid('good')
      const odd = [CID.createV1(0x70, await sha512.digest(enc('a'))), CID.createV1(0x70, Digest.create(sha512.code, new Uint8Array(32)))]
      const bytes = dagPB.encode({ Data: new Uint8Array(0), Links: [...odd, good].map(Hash => ({ Hash, Name: '', Tsize: 0 })) })
      const node = decodeNode(CID.createV1(0x70, await sha256.digest(bytes)), bytes)
      expect(node.links.map(String)).to.deep.equal([good.toString()])
      expect(node.refusedLinks).to.equal(2)
      const clean = await encodeNode({ elements: [], tombstones: [], priority: 1, dagName: '' }, [good])
      const decoded = decodeNode(clean.cid, clean.bytes)
      expect(decoded.refusedLinks).to.equal(undefined)
      expect(Object.keys(decoded)).to.not.include('refusedLinks')
    })

    it('a node of MAX_NODE_LINKS links is read; one more is refused, saying so', async () => {
      const list = await cids(MAX_NODE_LINKS + 1, 'link')
      const at = await encodeNode({ elements: [], tombstones: [], priority: 1, dagName: '' }, list.slice(0, MAX_NODE_LINKS))
      expect(decodeNode(at.cid, at.bytes).links).to.have.lengthOf(MAX_NODE_LINKS)
      const over = await encodeNode({ elements: [], tombstones: [], priority: 1, dagName: '' }, list)
      const err = caught(() => decodeNode(over.cid, over.bytes))
      expect(err.name).to.equal('MalformedBlockError')
      expect(err.message).to.equal(`Block ${over.cid} has ${MAX_NODE_LINKS + 1} links, over the limit of ${MAX_NODE_LINKS}`)
    })
  })

  describe('DAG names and block keys', () => {
    it('a DAG name of MAX_DAG_NAME_BYTES bytes is kept; one byte more is refused, saying so', () => {
      // a two-byte character at the end: the limit counts bytes, not characters
      const at = 'a'.repeat(MAX_DAG_NAME_BYTES - 2) + 'é'
      expect(canonicalDagName(at)).to.equal(at)
      const err = caught(() => canonicalDagName('b' + at))
      expect(err.name).to.equal('MalformedDeltaError')
      expect(err.message).to.equal(`DAG name is longer than ${MAX_DAG_NAME_BYTES} bytes`)
    })

    it('block keys of inputs far over 2048 bytes are still multiformats\' base32upper', () => {
      const big = Uint8Array.from({ length: 512 * 1024 }, (_, i) => (i * 31) & 0xff)
      expect(base32UpperKey(big)).to.equal('/' + base32upper.baseEncode(big))
    })
  })
})
