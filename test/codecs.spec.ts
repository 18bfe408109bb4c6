/**
 * The codecs at their edges, one deterministic case each: delta priority
 * bounds on both encode and decode, dag-pb node checks (codec of the block
 * and of its links), broadcasts (legacy bare CID, empty, duplicate and
 * non-dag-pb heads, the head limit) and block keys with or without their
 * leading slash. The property tests feed the same decoders random bytes;
 * these pin the boundaries a random input rarely lands on.
 */

import { expect } from 'aegir/chai'
import { base32upper } from 'multiformats/bases/base32'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { blockKey, cidFromBlockKey, base32UpperKey } from '../src/codec/block-key.js'
import { MAX_BROADCAST_HEADS } from '../src/codec/broadcast.js'
import { MAX_PRIORITY, elementSize } from '../src/codec/delta.js'
import { decodeBroadcast, decodeDelta, decodeNode, encodeBroadcast, encodeDelta, encodeNode } from '../src/index.js'
import { dagPbNode, delta as pbDelta, element as pbElement, lenField } from './fixtures/pb-writer.js'
import type { Delta } from '../src/index.js'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)

function deltaWith (priority: number): Delta {
  return { elements: [{ key: '/k', id: '', value: enc('v') }], tombstones: [], priority, dagName: '' }
}

function throwsNamed (fn: () => unknown, name: string, message?: RegExp): void {
  let caught: any
  try {
    fn()
  } catch (err) {
    caught = err
  }
  expect(caught, `expected ${name}`).to.be.an.instanceOf(Error)
  expect(caught.name).to.equal(name)
  if (message != null) expect(caught.message).to.match(message)
}

async function dagPbCid (bytes: Uint8Array): Promise<CID> {
  return CID.createV1(0x70, await sha256.digest(bytes))
}

describe('codecs at their edges', () => {
  describe('delta priorities', () => {
    it('MAX_PRIORITY is 2^53 - 2, so priority + 1 is still exact', () => {
      expect(MAX_PRIORITY).to.equal(2 ** 53 - 2)
      expect(Number.isSafeInteger(MAX_PRIORITY + 1)).to.equal(true)
    })

    it('encodes priorities 0 to MAX_PRIORITY and refuses anything else with MalformedDeltaError', () => {
      for (const p of [0, 1, 2 ** 32, MAX_PRIORITY]) {
        expect(decodeDelta(encodeDelta(deltaWith(p))).priority, String(p)).to.equal(p)
      }
      for (const p of [-1, MAX_PRIORITY + 1, Number.MAX_SAFE_INTEGER + 2, Number.NaN, Number.POSITIVE_INFINITY]) {
        throwsNamed(() => encodeDelta(deltaWith(p)), 'MalformedDeltaError', /not an integer in/)
      }
    })

    it('decodes MAX_PRIORITY and saturates MAX_PRIORITY + 1 and 2^64 - 1 to it', () => {
      expect(decodeDelta(Uint8Array.from(pbDelta([], [], BigInt(MAX_PRIORITY)))).priority).to.equal(MAX_PRIORITY)
      for (const p of [BigInt(MAX_PRIORITY) + 1n, 2n ** 64n - 1n]) {
        expect(decodeDelta(Uint8Array.from(pbDelta([], [], p))).priority, String(p)).to.equal(MAX_PRIORITY)
      }
    })

    it('bytes that are not a delta give MalformedDeltaError; missing values decode as empty', async () => {
      throwsNamed(() => decodeDelta(Uint8Array.of(0x0a, 0x05, 0x01)), 'MalformedDeltaError', /does not decode/)
      const id = blockKey(await dagPbCid(enc('tombstoned')))
      const decoded = decodeDelta(Uint8Array.from(pbDelta([pbElement('/k', '', '')], [pbElement('/k', id, '')], 3)))
      expect(decoded.elements[0].value).to.deep.equal(new Uint8Array(0))
      expect(decoded.tombstones).to.deep.equal([{ key: '/k', id, value: new Uint8Array(0) }])
      // a tombstone id must be exactly one block key
      throwsNamed(() => decodeDelta(Uint8Array.from(pbDelta([], [pbElement('/k', '/ID', '')], 3))), 'MalformedDeltaError', /not one block key/)
    })

    it('elementSize is the exact size the element adds to an encoded delta', () => {
      const empty = encodeDelta({ elements: [], tombstones: [], priority: 1, dagName: '' }).byteLength
      for (const [key, id, value] of [['/k', '', new Uint8Array(0)], ['', '', new Uint8Array(0)], ['/ü/日本', '/CIQ', new Uint8Array(200)], ['/k'.repeat(100), '/x'.repeat(70), new Uint8Array(20_000)]] as const) {
        const size = encodeDelta({ elements: [{ key, id, value }], tombstones: [], priority: 1, dagName: '' }).byteLength - empty
        expect(elementSize(key, id, value), `${key.length}/${id.length}/${value.byteLength}`).to.equal(size)
      }
    })
  })

  describe('dag-pb nodes', () => {
    it('round-trip a delta and its links', async () => {
      const links = [await dagPbCid(enc('a')), await dagPbCid(enc('b'))]
      const built = await encodeNode(deltaWith(7), links)
      expect(built.cid.equals(await dagPbCid(built.bytes))).to.equal(true)
      const node = decodeNode(built.cid, built.bytes)
      expect(node.delta).to.deep.equal(deltaWith(7))
      expect(node.links.map(String)).to.deep.equal(links.map(String))
    })

    it('refuse a block whose CID is not dag-pb or bytes that are not dag-pb; skip links to other codecs', async () => {
      const built = await encodeNode(deltaWith(1), [])
      throwsNamed(() => decodeNode(CID.createV1(0x55, built.cid.multihash), built.bytes), 'MalformedBlockError', /not dag-pb \(codec 0x55\)/)
      throwsNamed(() => decodeNode(built.cid, Uint8Array.of(0xff, 0xff)), 'MalformedBlockError', /not a dag-pb node/)
      const raw = CID.createV1(0x55, await sha256.digest(enc('raw')))
      const bytes = dagPbNode(pbDelta([pbElement('/k', '', 'v')], [], 2), [raw.bytes])
      const cid = await dagPbCid(bytes)
      // the rest of the node is merged; the unusable link is skipped (and recorded by the engine)
      const node = decodeNode(cid, bytes)
      expect(node.links).to.deep.equal([])
      expect(node.delta.elements.map(e => e.key)).to.deep.equal(['/k'])
    })

    it('keep each linked block once, in first-seen order, with few links and with many, v0 and v1 alike', async () => {
      for (const n of [3, 40]) {
        const cids = await Promise.all(Array.from({ length: n }, async (_, i) => dagPbCid(enc(`l${i}`))))
        const v0 = CID.createV0(cids[1].multihash as Parameters<typeof CID.createV0>[0])
        const built = await encodeNode(deltaWith(2), [...cids, cids[0], v0, cids[n - 1]])
        const node = decodeNode(built.cid, built.bytes)
        expect(node.links.map(String), `${n} links`).to.deep.equal(cids.map(String))
      }
    })

    it('a node without Data is an empty delta at priority 0; a CIDv0 link is read as v1', async () => {
      const v0 = CID.createV0(await sha256.digest(enc('v0')))
      const bytes = Uint8Array.from(lenField(2, lenField(1, v0.bytes)))
      const node = decodeNode(await dagPbCid(bytes), bytes)
      expect(node.delta).to.deep.equal({ elements: [], tombstones: [], priority: 0, dagName: '' })
      expect(node.links.map(l => l.version)).to.deep.equal([1])
      expect(node.links[0].multihash.bytes).to.deep.equal(v0.multihash.bytes)
    })
  })

  describe('broadcasts', () => {
    it('round-trip heads grouped by DAG name, duplicates once', async () => {
      const a = await dagPbCid(enc('a'))
      const b = await dagPbCid(enc('b'))
      const decoded = decodeBroadcast(encodeBroadcast([{ cid: a, dagName: '' }, { cid: b, dagName: 'x' }, { cid: a, dagName: '' }, { cid: b, dagName: '' }]))
      expect([...decoded.entries()].map(([name, cids]) => [name, cids.map(String)])).to.deep.equal([['', [a.toString(), b.toString()]], ['x', [b.toString()]]])
    })

    it('accept a bare binary dag-pb CID (legacy), in v0 or v1 form', async () => {
      const a = await dagPbCid(enc('a'))
      expect(decodeBroadcast(a.bytes).get('')?.map(String)).to.deep.equal([a.toString()])
      const v0 = CID.createV0(await sha256.digest(enc('a')))
      expect(decodeBroadcast(v0.bytes).get('')?.map(String)).to.deep.equal([a.toString()])
    })

    it('refuse no heads, junk heads, non-dag-pb heads and more than MAX_BROADCAST_HEADS', async () => {
      throwsNamed(() => decodeBroadcast(new Uint8Array(0)), 'MalformedBroadcastError', /no heads/)
      throwsNamed(() => decodeBroadcast(Uint8Array.of(0xff)), 'MalformedBroadcastError', /does not decode/)
      throwsNamed(() => decodeBroadcast(Uint8Array.from(lenField(1, lenField(1, [1, 2, 3])))), 'MalformedBroadcastError', /not a valid binary CID/)
      const raw = CID.createV1(0x55, await sha256.digest(enc('raw')))
      throwsNamed(() => decodeBroadcast(encodeBroadcast([{ cid: raw, dagName: '' }])), 'MalformedBroadcastError', /not a dag-pb node/)
      // a raw CID alone is not a legacy broadcast either
      throwsNamed(() => decodeBroadcast(raw.bytes), 'MalformedBroadcastError')
      const a = await dagPbCid(enc('a'))
      // a CID followed by trailing bytes is not a legacy broadcast
      throwsNamed(() => decodeBroadcast(Uint8Array.from([...a.bytes, 0])), 'MalformedBroadcastError')
      const heads = await Promise.all(Array.from({ length: MAX_BROADCAST_HEADS + 1 }, async (_, i) => ({ cid: await dagPbCid(enc(`h${i}`)), dagName: '' })))
      expect([...decodeBroadcast(encodeBroadcast(heads.slice(0, MAX_BROADCAST_HEADS))).values()].flat()).to.have.lengthOf(MAX_BROADCAST_HEADS)
      throwsNamed(() => decodeBroadcast(encodeBroadcast(heads)), 'MalformedBroadcastError', /does not decode/)
    })
  })

  describe('block keys', () => {
    it('are "/" + upper-case base32 of the multihash, and parse with or without the slash', async () => {
      const cid = await dagPbCid(enc('k'))
      const key = blockKey(cid)
      expect(key).to.match(/^\/CIQ[A-Z2-7]+$/)
      expect(cidFromBlockKey(key).equals(cid)).to.equal(true)
      expect(cidFromBlockKey(key.slice(1)).equals(cid)).to.equal(true)
      expect(cidFromBlockKey(key).code).to.equal(0x70)
      expect(() => cidFromBlockKey('/not-base32!')).to.throw()
    })

    it('are encoded exactly as multiformats\' base32upper, at every length and bit pattern', () => {
      for (let n = 0; n <= 80; n++) {
        for (const fill of [0x00, 0xff, 0xa5, -1]) {
          const bytes = Uint8Array.from({ length: n }, (_, i) => fill >= 0 ? fill : (i * 151 + n * 7) & 0xff)
          expect(base32UpperKey(bytes), `${n} bytes of ${fill}`).to.equal('/' + base32upper.baseEncode(bytes))
          expect(base32UpperKey(bytes, '/B')).to.equal('/' + base32upper.encoder.encode(bytes))
        }
      }
      const large = Uint8Array.from({ length: 5000 }, (_, i) => (i * 31) & 0xff)
      expect(base32UpperKey(large)).to.equal('/' + base32upper.baseEncode(large))
    })

    it('are the same for equal CIDs whether or not the CID object was seen before', async () => {
      const cid = await dagPbCid(enc('again'))
      const first = blockKey(cid)
      expect(blockKey(cid)).to.equal(first)
      expect(blockKey(CID.decode(cid.bytes))).to.equal(first)
      expect(first).to.equal('/' + base32upper.baseEncode(cid.multihash.bytes))
    })
  })

  describe('element sizes at varint boundaries', () => {
    it('lengths of 127, 128, 16,383 and 16,384 bytes take one, two, two and three length bytes', () => {
      const empty = encodeDelta({ elements: [], tombstones: [], priority: 1, dagName: '' }).byteLength
      for (const n of [126, 127, 128, 129, 16_383, 16_384]) {
        const value = new Uint8Array(n)
        const size = encodeDelta({ elements: [{ key: '', id: '', value }], tombstones: [], priority: 1, dagName: '' }).byteLength - empty
        expect(elementSize('', '', value), `${n} bytes`).to.equal(size)
      }
    })
  })
})
