import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { decodeNode } from '../src/index.js'
import { dec, enc, memoryReplica, readBlock, syncReplica } from './fixtures/stores.js'
import type { MemoryReplica } from './fixtures/stores.js'

const k = new Key('/k')

async function valueOf (r: MemoryReplica, key = k): Promise<string | undefined> {
  return await r.store.has(key) ? dec(await r.store.get(key)) : undefined
}

describe('OR-set merge rules', () => {
  let replicas: MemoryReplica[] = []

  async function replica (): Promise<MemoryReplica> {
    const r = await memoryReplica({ repairInterval: 0 })
    replicas.push(r)
    return r
  }

  afterEach(async () => {
    await Promise.all(replicas.map(async r => r.store.stop()))
    replicas = []
  })

  it('the highest priority wins', async () => {
    const a = await replica()
    const b = await replica()
    await a.store.put(k, enc('old'))
    await syncReplica(a, b)
    await b.store.put(k, enc('a-newer'))
    await a.store.put(new Key('/other'), enc('x'))
    await a.store.put(k, enc('z-lower-priority')) // height 3 on a
    await syncReplica(a, b)
    await syncReplica(b, a)
    // a's write sits at height 3, b's at height 2
    expect(await valueOf(a)).to.equal('z-lower-priority')
    expect(await valueOf(b)).to.equal('z-lower-priority')
  })

  it('equal priority goes to the byte-wise greatest value', async () => {
    const a = await replica()
    const b = await replica()
    await a.store.put(k, enc('apple'))
    await b.store.put(k, enc('banana'))
    await syncReplica(a, b)
    await syncReplica(b, a)
    expect(await valueOf(a)).to.equal('banana')
    expect(await valueOf(b)).to.equal('banana')
  })

  it('byte-wise comparison, not string comparison', async () => {
    const a = await replica()
    const b = await replica()
    await a.store.put(k, Uint8Array.of(0x7f, 0xff))
    await b.store.put(k, Uint8Array.of(0x80))
    await syncReplica(a, b)
    await syncReplica(b, a)
    expect(await a.store.get(k)).to.deep.equal(Uint8Array.of(0x80))
    expect(await b.store.get(k)).to.deep.equal(Uint8Array.of(0x80))
  })

  it('add wins over a concurrent remove', async () => {
    const a = await replica()
    const b = await replica()
    await a.store.put(k, enc('v1'))
    await syncReplica(a, b)
    await a.store.delete(k)
    await b.store.put(k, enc('v2'))
    await syncReplica(a, b)
    await syncReplica(b, a)
    expect(await valueOf(a)).to.equal('v2')
    expect(await valueOf(b)).to.equal('v2')
  })

  it('a delete reveals the next best live value', async () => {
    const a = await replica()
    const b = await replica()
    await a.store.put(k, enc('a1'))
    await a.store.put(k, enc('a2'))
    await b.store.put(k, enc('b1'))
    await syncReplica(a, b)
    expect(await valueOf(b)).to.equal('a2')
    await a.store.delete(k) // tombstones a1 and a2 only: a has never seen b1
    await syncReplica(a, b)
    expect(await valueOf(b)).to.equal('b1')
    await syncReplica(b, a)
    expect(await valueOf(a)).to.equal('b1')
  })

  it('tombstones arriving before their elements still kill them', async () => {
    const a = await replica()
    const b = await replica()
    await a.store.put(k, enc('gone'))
    await a.store.delete(k)
    // b walks from the delete node down: the tombstone is merged first
    await syncReplica(a, b)
    expect(await b.store.has(k)).to.equal(false)
    expect(await valueOf(a)).to.equal(undefined)
  })

  it('go-ds-crdt #238: put, put, delete vs a concurrent put converge', async () => {
    const a = await replica()
    const b = await replica()
    await a.store.put(k, enc('a-1'))
    await a.store.put(k, enc('a-2'))
    await a.store.delete(k)
    await b.store.put(k, enc('b-1'))
    await syncReplica(a, b)
    await syncReplica(b, a)
    expect(await valueOf(a)).to.equal('b-1')
    expect(await valueOf(b)).to.equal('b-1')
    const listA = []
    for await (const e of a.store.query({})) listA.push([e.key.toString(), dec(e.value)])
    const listB = []
    for await (const e of b.store.query({})) listB.push([e.key.toString(), dec(e.value)])
    expect(listA).to.deep.equal(listB)
  })

  it('re-delivering a node changes nothing (idempotent)', async () => {
    const a = await replica()
    const b = await replica()
    await a.store.put(k, enc('once'))
    await syncReplica(a, b)
    const heads = b.store.heads().map(h => h.cid.toString())
    await syncReplica(a, b)
    await syncReplica(a, b)
    expect(b.store.heads().map(h => h.cid.toString())).to.deep.equal(heads)
    expect(await valueOf(b)).to.equal('once')
  })

  it('keys that prefix other keys keep separate elements', async () => {
    const a = await replica()
    await a.store.put(new Key('/a'), enc('short'))
    await a.store.put(new Key('/a/b'), enc('long'))
    await a.store.put(new Key('/ab'), enc('other'))
    await a.store.delete(new Key('/a'))
    expect(await a.store.has(new Key('/a'))).to.equal(false)
    expect(dec(await a.store.get(new Key('/a/b')))).to.equal('long')
    expect(dec(await a.store.get(new Key('/ab')))).to.equal('other')
    // the delete tombstoned only the element of /a
    const [head] = a.store.heads()
    const node = decodeNode(head.cid, await readBlock(a.blockstore, head.cid))
    expect(node.delta.tombstones.map(t => t.key)).to.deep.equal(['/a'])
  })

  it('deleting a missing key writes no node', async () => {
    const a = await replica()
    await a.store.delete(new Key('/nothing'))
    expect(a.store.heads()).to.have.lengthOf(0)
  })

  it('keys are cleaned like go-datastore keys on every path', async () => {
    const a = await replica()
    await a.store.put(new Key('/x//y/'), enc('v'))
    expect(dec(await a.store.get(new Key('/x/y')))).to.equal('v')
    expect(dec(await a.store.get(new Key('/x//y')))).to.equal('v')
  })
})
