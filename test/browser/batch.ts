/**
 * Batches in the browser on IndexedDB: one node per commit, auto-commit
 * before a delta passes maxBatchDeltaSize, put/delete ordering inside one
 * batch, and the named error for a value that fits no delta.
 */

import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import all from 'it-all'
import { decodeNode } from '../../src/codec/dag-node.js'
import { encodeDelta } from '../../src/codec/delta.js'
import { dec, enc, idbReplica, readBlock } from './fixtures/stores.js'
import type { Replica } from './fixtures/stores.js'
import type { CID } from 'multiformats/cid'

async function chain (r: Replica): Promise<Array<{ size: number, keys: string[] }>> {
  const out = []
  let next: CID | undefined = r.store.heads()[0]?.cid
  while (next != null) {
    const node = decodeNode(next, await readBlock(r.blockstore, next))
    out.push({ size: encodeDelta(node.delta).byteLength, keys: node.delta.elements.map(e => e.key) })
    next = node.links[0]
  }
  return out.reverse()
}

describe('batches on IndexedDB', () => {
  let open: Replica[] = []

  async function replica (maxBatchDeltaSize?: number): Promise<Replica> {
    const r = await idbReplica(undefined, { maxBatchDeltaSize })
    open.push(r)
    return r
  }

  afterEach(async () => {
    await Promise.all(open.map(async r => r.close()))
    open = []
  })

  it('writes nothing until commit, then one node', async () => {
    const r = await replica()
    const batch = r.store.batch()
    for (let i = 0; i < 20; i++) batch.put(new Key(`/k${i}`), enc(`v${i}`))
    expect(await r.store.has(new Key('/k0'))).to.equal(false)
    await batch.commit()
    expect(r.store.heads().map(h => h.height)).to.deep.equal([1])
    expect(await all(r.store.queryKeys({}))).to.have.lengthOf(20)
  })

  it('commits by itself before a delta passes maxBatchDeltaSize, and keeps order', async () => {
    const r = await replica(1000)
    const batch = r.store.batch()
    const value = new Uint8Array(100).fill(7)
    for (let i = 0; i < 30; i++) batch.put(new Key(`/key-${String(i).padStart(2, '0')}`), value)
    await batch.commit()
    const nodes = await chain(r)
    expect(nodes.length).to.be.greaterThan(2)
    for (const node of nodes) expect(node.size).to.be.at.most(1000)
    expect(nodes.flatMap(n => n.keys)).to.deep.equal(Array.from({ length: 30 }, (_, i) => `/key-${String(i).padStart(2, '0')}`))
  })

  it('a delete after a put of the same key in one batch removes the put', async () => {
    const r = await replica()
    await r.store.put(new Key('/a'), enc('before'))
    const batch = r.store.batch()
    batch.put(new Key('/a'), enc('in-batch'))
    batch.delete(new Key('/a'))
    batch.put(new Key('/b'), enc('b'))
    await batch.commit()
    expect(await r.store.has(new Key('/a'))).to.equal(false)
    expect(dec(await r.store.get(new Key('/b')))).to.equal('b')
  })

  it('putMany and deleteMany write one node each when small', async () => {
    const r = await replica()
    const pairs = Array.from({ length: 30 }, (_, i) => ({ key: new Key(`/m${i}`), value: enc(`${i}`) }))
    expect(await all(r.store.putMany(pairs))).to.have.lengthOf(30)
    expect(r.store.heads()[0].height).to.equal(1)
    await all(r.store.deleteMany(pairs.slice(0, 10).map(p => p.key)))
    expect(r.store.heads()[0].height).to.equal(2)
    expect(await all(r.store.queryKeys({}))).to.have.lengthOf(20)
  })

  it('refuses a value that cannot fit in any delta with ValueTooLargeError, writing nothing', async () => {
    const r = await replica(200)
    const batch = r.store.batch()
    expect(() => { batch.put(new Key('/big'), new Uint8Array(500)) }).to.throw().with.property('name', 'ValueTooLargeError')
    await expect(r.store.put(new Key('/big'), new Uint8Array(500))).to.eventually.be.rejected.with.property('name', 'ValueTooLargeError')
    expect(r.store.heads()).to.have.lengthOf(0)
  })
})
