import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import all from 'it-all'
import { decodeNode, encodeDelta } from '../src/index.js'
import { dec, enc, memoryReplica, readBlock, syncReplica } from './fixtures/stores.js'
import type { MemoryReplica } from './fixtures/stores.js'
import type { CID } from 'multiformats/cid'

async function chain (r: MemoryReplica): Promise<Array<{ cid: CID, size: number, keys: string[] }>> {
  const out = []
  let next: CID | undefined = r.store.heads()[0]?.cid
  while (next != null) {
    const node = decodeNode(next, await readBlock(r.blockstore, next))
    out.push({ cid: next, size: encodeDelta(node.delta).byteLength, keys: node.delta.elements.map(e => e.key) })
    next = node.links[0]
  }
  return out.reverse()
}

describe('batches', () => {
  let replicas: MemoryReplica[] = []
  afterEach(async () => {
    await Promise.all(replicas.map(async r => r.store.stop()))
    replicas = []
  })
  async function replica (maxBatchDeltaSize?: number): Promise<MemoryReplica> {
    const r = await memoryReplica({ maxBatchDeltaSize, repairInterval: 0 })
    replicas.push(r)
    return r
  }

  it('writes nothing until commit, then one node', async () => {
    const r = await replica()
    const batch = r.store.batch()
    for (let i = 0; i < 20; i++) batch.put(new Key(`/k${i}`), enc(`v${i}`))
    expect(await r.store.has(new Key('/k0'))).to.equal(false)
    await batch.commit()
    expect(r.store.heads()).to.have.lengthOf(1)
    expect(r.store.heads()[0].height).to.equal(1)
    expect(await all(r.store.queryKeys({}))).to.have.lengthOf(20)
  })

  it('commits by itself before a delta passes maxBatchDeltaSize, and keeps order', async () => {
    const r = await replica(1000)
    const batch = r.store.batch()
    const value = new Uint8Array(100).fill(7)
    for (let i = 0; i < 50; i++) batch.put(new Key(`/key-${String(i).padStart(2, '0')}`), value)
    batch.delete(new Key('/key-00'))
    await batch.commit()
    const nodes = await chain(r)
    expect(nodes.length).to.be.greaterThan(5)
    for (const node of nodes) expect(node.size).to.be.at.most(1000)
    expect(nodes.flatMap(n => n.keys)).to.deep.equal(Array.from({ length: 50 }, (_, i) => `/key-${String(i).padStart(2, '0')}`))
    // the delete came after the auto-commit that wrote /key-00, so it won
    expect(await r.store.has(new Key('/key-00'))).to.equal(false)
    expect(await all(r.store.queryKeys({}))).to.have.lengthOf(49)
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

  it('a put after a delete of the same key in one batch keeps the new value', async () => {
    const r = await replica()
    await r.store.put(new Key('/a'), enc('before'))
    const batch = r.store.batch()
    batch.delete(new Key('/a'))
    batch.put(new Key('/a'), enc('after'))
    await batch.commit()
    expect(dec(await r.store.get(new Key('/a')))).to.equal('after')
    const [head] = r.store.heads()
    const node = decodeNode(head.cid, await readBlock(r.blockstore, head.cid))
    expect(node.delta.tombstones).to.have.lengthOf(1)
    expect(node.delta.elements).to.have.lengthOf(1)
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

  it('refuses a value that cannot fit in any delta, writing nothing', async () => {
    const r = await replica(200)
    const batch = r.store.batch()
    expect(() => { batch.put(new Key('/big'), new Uint8Array(500)) }).to.throw().with.property('name', 'ValueTooLargeError')
    await expect(r.store.put(new Key('/big'), new Uint8Array(500))).to.eventually.be.rejected.with.property('name', 'ValueTooLargeError')
    expect(r.store.heads()).to.have.lengthOf(0)
  })

  it('batches on named DAGs', async () => {
    const r = await replica()
    const batch = r.store.batch({ dagName: 'team' })
    batch.put(new Key('/t'), enc('1'))
    await batch.commit()
    expect(r.store.heads('team')).to.have.lengthOf(1)
    expect(r.store.heads('')).to.have.lengthOf(0)
  })
})

describe('events', () => {
  it('fire put and delete on the writer and on a replica that merges', async () => {
    const a = await memoryReplica()
    const b = await memoryReplica()
    const seen: string[] = []
    for (const [name, r] of [['a', a], ['b', b]] as const) {
      r.store.addEventListener('put', evt => { seen.push(`${name} put ${evt.detail.key.toString()}=${dec(evt.detail.value)}`) })
      r.store.addEventListener('delete', evt => { seen.push(`${name} delete ${evt.detail.key.toString()}`) })
    }
    await a.store.put(new Key('/e'), enc('1'))
    await syncReplica(a, b)
    await a.store.delete(new Key('/e'))
    await syncReplica(a, b)
    expect(seen).to.deep.equal(['a put /e=1', 'b put /e=1', 'a delete /e', 'b delete /e'])
    await a.store.stop()
    await b.store.stop()
  })

  it('fires put with the revealed value when a delete uncovers another one', async () => {
    const a = await memoryReplica()
    const b = await memoryReplica()
    await a.store.put(new Key('/e'), enc('a'))
    await b.store.put(new Key('/e'), enc('b'))
    await syncReplica(b, a)
    const seen: string[] = []
    a.store.addEventListener('put', evt => { seen.push(dec(evt.detail.value)) })
    a.store.addEventListener('delete', () => { seen.push('deleted') })
    await b.store.delete(new Key('/e'))
    await syncReplica(b, a)
    expect(seen).to.deep.equal(['a'])
    await a.store.stop()
    await b.store.stop()
  })
})
