/**
 * The wire format in the browser: the spec vector for put("/hello",
 * "world") stored in IndexedDB, and round trips of every codec (delta,
 * dag-pb node, broadcast, block key) against bytes written independently by
 * test/fixtures/pb-writer.ts.
 */

import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { toString as uint8ArrayToString } from 'uint8arrays/to-string'
import { blockKey, cidFromBlockKey } from '../../src/codec/block-key.js'
import { decodeBroadcast, encodeBroadcast } from '../../src/codec/broadcast.js'
import { decodeNode, encodeNode } from '../../src/codec/dag-node.js'
import { decodeDelta, encodeDelta } from '../../src/codec/delta.js'
import { dagPbNode, delta, element, lenField } from '../fixtures/pb-writer.js'
import { dec, enc, idbReplica, readBlock } from './fixtures/stores.js'

const hex = (b: Uint8Array): string => uint8ArrayToString(b, 'base16')
const HELLO = 'bafybeidsfjpejlb67ieikrewsjvlxd3giucznszgdcb6qhclkyk2hvonta'

describe('wire format in the browser', () => {
  it('put("/hello", "world") into IndexedDB gives the spec vector', async () => {
    const r = await idbReplica()
    try {
      await r.store.put(new Key('/hello'), enc('world'))
      const [head] = r.store.heads()
      expect(head.cid.toString()).to.equal(HELLO)
      expect(hex(await readBlock(r.blockstore, head.cid))).to.equal('0a130a0f0a062f68656c6c6f1a05776f726c641801')
    } finally {
      await r.close()
    }
  })

  it('delta: independent bytes decode and re-encode identically', () => {
    const tomb = '/CIQ' + 'A'.repeat(52)
    const bytes = Uint8Array.from(delta([element('/a', '', Uint8Array.of(0, 255))], [element('/b', tomb, '')], 7, 'named'))
    const d = decodeDelta(bytes)
    expect(d.priority).to.equal(7)
    expect(d.dagName).to.equal('named')
    expect(d.elements.map(e => [e.key, [...e.value]])).to.deep.equal([['/a', [0, 255]]])
    expect(d.tombstones.map(t => [t.key, t.id])).to.deep.equal([['/b', tomb]])
    expect(hex(encodeDelta(d))).to.equal(hex(bytes))
  })

  it('dag-pb node: encodeNode matches independent bytes and decodes back', async () => {
    const link = CID.parse(HELLO)
    const d = decodeDelta(Uint8Array.from(delta([element('/x', '', 'y')], [], 2)))
    const encoded = await encodeNode(d, [link])
    const expected = dagPbNode(delta([element('/x', '', 'y')], [], 2), [link.bytes])
    expect(hex(encoded.bytes)).to.equal(hex(expected))
    expect(encoded.cid.toString()).to.equal(CID.createV1(0x70, await sha256.digest(expected)).toString())
    const node = decodeNode(encoded.cid, encoded.bytes)
    expect(node.links.map(String)).to.deep.equal([HELLO])
    expect(dec(node.delta.elements[0].value)).to.equal('y')
  })

  it('broadcast: CRDTBroadcast bytes round trip, with named DAGs', () => {
    const cid = CID.parse(HELLO)
    const encoded = encodeBroadcast([{ cid, dagName: '' }, { cid, dagName: 'n' }])
    const expected = [...lenField(1, lenField(1, cid.bytes)), ...lenField(1, [...lenField(1, cid.bytes), ...lenField(2, 'n')])]
    expect(hex(encoded)).to.equal(hex(Uint8Array.from(expected)))
    const decoded = decodeBroadcast(encoded)
    expect(decoded.get('')?.map(String)).to.deep.equal([HELLO])
    expect(decoded.get('n')?.map(String)).to.deep.equal([HELLO])
  })

  it('block keys are upper-case base32 multihashes and round trip', () => {
    const key = blockKey(CID.parse(HELLO))
    expect(key).to.match(/^\/CIQ[A-Z2-7]+$/)
    expect(cidFromBlockKey(key).toString()).to.equal(HELLO)
  })
})
