import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { toString as uint8ArrayToString } from 'uint8arrays/to-string'
import { blockKey, cidFromBlockKey, decodeBroadcast, decodeNode, encodeBroadcast } from '../src/index.js'
import { dagPbNode, delta, element, lenField } from './fixtures/pb-writer.js'
import { dec, enc, memoryReplica, readBlock } from './fixtures/stores.js'

const hex = (b: Uint8Array): string => uint8ArrayToString(b, 'base16')

/** CIDv1 dag-pb sha2-256 of bytes, computed independently of the store */
async function cidOf (bytes: Uint8Array): Promise<CID> {
  return CID.createV1(0x70, await sha256.digest(bytes))
}

describe('wire format (go-ds-crdt compatible)', () => {
  it('put("/hello", "world") on an empty store gives the spec vector', async () => {
    const { store, blockstore } = await memoryReplica()
    await store.put(new Key('/hello'), enc('world'))
    const [head] = store.heads()
    expect(head.cid.toString()).to.equal('bafybeidsfjpejlb67ieikrewsjvlxd3giucznszgdcb6qhclkyk2hvonta')
    expect(head.height).to.equal(1)
    expect(hex(await readBlock(blockstore, head.cid))).to.equal('0a130a0f0a062f68656c6c6f1a05776f726c641801')
    await store.stop()
  })

  it('an overwrite links the previous head with an empty Name and zero Tsize', async () => {
    const { store, blockstore } = await memoryReplica()
    await store.put(new Key('/hello'), enc('world'))
    const [first] = store.heads()
    await store.put(new Key('/hello'), enc('again'))
    const [second] = store.heads()

    const expected = dagPbNode(delta([element('/hello', '', 'again')], [], 2), [first.cid.bytes])
    expect(hex(await readBlock(blockstore, second.cid))).to.equal(hex(expected))
    expect(second.cid.toString()).to.equal((await cidOf(expected)).toString())
    expect(second.height).to.equal(2)
    await store.stop()
  })

  it('a delete carries one tombstone per live element, ids ascending', async () => {
    const { store, blockstore } = await memoryReplica()
    await store.put(new Key('/k'), enc('one'))
    const [a] = store.heads()
    await store.put(new Key('/k'), enc('two'))
    const [b] = store.heads()
    await store.delete(new Key('/k'))
    const [c] = store.heads()

    const ids = [blockKey(a.cid), blockKey(b.cid)].sort()
    expect(ids[0]).to.match(/^\/CIQ[A-Z2-7]+$/)
    const expected = dagPbNode(delta([], ids.map(id => element('/k', id, '')), 3), [b.cid.bytes])
    expect(hex(await readBlock(blockstore, c.cid))).to.equal(hex(expected))
    expect(c.cid.toString()).to.equal((await cidOf(expected)).toString())
    expect(await store.has(new Key('/k'))).to.equal(false)
    await store.stop()
  })

  it('a batch is one node with its elements in put order', async () => {
    const { store, blockstore } = await memoryReplica()
    const batch = store.batch()
    batch.put(new Key('/b'), enc('2'))
    batch.put(new Key('/a'), enc('1'))
    batch.put(new Key('/c'), enc('3'))
    await batch.commit()
    const heads = store.heads()
    expect(heads).to.have.lengthOf(1)
    const expected = dagPbNode(delta([element('/b', '', '2'), element('/a', '', '1'), element('/c', '', '3')], [], 1), [])
    expect(hex(await readBlock(blockstore, heads[0].cid))).to.equal(hex(expected))
    await store.stop()
  })

  it('a named DAG writes dagName into the delta and keeps its own heads', async () => {
    const { store, blockstore } = await memoryReplica()
    await store.put(new Key('/x'), enc('y'), { dagName: 'users' })
    await store.put(new Key('/z'), enc('w'))
    const [named] = store.heads('users')
    expect(named.dagName).to.equal('users')
    expect(named.height).to.equal(1)
    expect(store.heads('')[0].height).to.equal(1)
    const expected = dagPbNode(delta([element('/x', '', 'y')], [], 1, 'users'), [])
    expect(hex(await readBlock(blockstore, named.cid))).to.equal(hex(expected))
    await store.stop()
  })

  it('block keys are upper-case base32 multihashes and round-trip', async () => {
    const cid = CID.parse('bafybeidsfjpejlb67ieikrewsjvlxd3giucznszgdcb6qhclkyk2hvonta')
    const key = blockKey(cid)
    expect(key).to.match(/^\/CIQ[A-Z2-7]+$/)
    expect(key).to.not.include('=')
    expect(cidFromBlockKey(key).toString()).to.equal(cid.toString())
  })

  it('merges a go-shaped block fed directly, with a named DAG and two elements', async () => {
    const { store, blockstore } = await memoryReplica()
    // a node without links has priority 1, as every writer gives it
    const bytes = dagPbNode(delta([element('/go/a', '', 'from-go'), element('/go/b', '', Uint8Array.of(0, 255))], [], 1, 'go-dag'), [])
    const cid = await cidOf(bytes)
    await blockstore.put(cid, bytes)
    await store.receive(encodeBroadcast([{ cid, dagName: 'go-dag' }]))
    expect(dec(await store.get(new Key('/go/a')))).to.equal('from-go')
    expect(await store.get(new Key('/go/b'))).to.deep.equal(Uint8Array.of(0, 255))
    expect(store.heads('go-dag').map(h => [h.cid.toString(), h.height])).to.deep.equal([[cid.toString(), 1]])
    await store.stop()
  })

  it('accepts a legacy broadcast that is a bare binary CID', async () => {
    const { store, blockstore } = await memoryReplica()
    const bytes = dagPbNode(delta([element('/legacy', '', 'yes')], [], 1), [])
    const cid = await cidOf(bytes)
    await blockstore.put(cid, bytes)
    expect([...decodeBroadcast(cid.bytes).keys()]).to.deep.equal([''])
    await store.receive(cid.bytes)
    expect(dec(await store.get(new Key('/legacy')))).to.equal('yes')
    await store.stop()
  })

  it('encodes broadcasts as CRDTBroadcast { repeated Head { bytes Cid = 1; string DagName = 2 } }', async () => {
    const cid = CID.parse('bafybeidsfjpejlb67ieikrewsjvlxd3giucznszgdcb6qhclkyk2hvonta')
    const encoded = encodeBroadcast([{ cid, dagName: '' }, { cid, dagName: 'n' }])
    const expected = [...lenField(1, lenField(1, cid.bytes)), ...lenField(1, [...lenField(1, cid.bytes), ...lenField(2, 'n')])]
    expect(hex(encoded)).to.equal(hex(Uint8Array.from(expected)))
    const decoded = decodeBroadcast(encoded)
    expect(decoded.get('')?.map(String)).to.deep.equal([cid.toString()])
    expect(decoded.get('n')?.map(String)).to.deep.equal([cid.toString()])
  })

  it('decodes a block into its delta and links', async () => {
    const link = CID.parse('bafybeidsfjpejlb67ieikrewsjvlxd3giucznszgdcb6qhclkyk2hvonta')
    const tombId = '/CIQ' + 'A'.repeat(52)
    const bytes = dagPbNode(delta([], [element('/k', tombId, '')], 9, 'd'), [link.bytes])
    const node = decodeNode(await cidOf(bytes), bytes)
    expect(node.links.map(String)).to.deep.equal([link.toString()])
    expect(node.delta.priority).to.equal(9)
    expect(node.delta.dagName).to.equal('d')
    expect(node.delta.tombstones).to.deep.equal([{ key: '/k', id: tombId, value: new Uint8Array(0) }])
  })
})
