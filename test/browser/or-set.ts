/**
 * OR-set and store basics in the browser, on IndexedDB: merge rules between
 * two replicas, deletes, and state that survives closing and reopening the
 * databases (what a page reload does).
 */

import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { dec, enc, idbReplica, syncReplica } from './fixtures/stores.js'
import type { Replica } from './fixtures/stores.js'

const k = new Key('/k')

async function valueOf (r: Replica, key = k): Promise<string | undefined> {
  return await r.store.has(key) ? dec(await r.store.get(key)) : undefined
}

describe('OR-set on IndexedDB', () => {
  let open: Replica[] = []

  async function replica (name?: string): Promise<Replica & { name: string }> {
    const r = await idbReplica(name)
    open.push(r)
    return r
  }

  afterEach(async () => {
    await Promise.all(open.map(async r => r.close()))
    open = []
  })

  it('put, get, has, delete and query', async () => {
    const a = await replica()
    await a.store.put(new Key('/a'), enc('1'))
    await a.store.put(new Key('/b'), enc('2'))
    expect(await valueOf(a, new Key('/a'))).to.equal('1')
    await a.store.delete(new Key('/a'))
    expect(await a.store.has(new Key('/a'))).to.equal(false)
    const listed = []
    for await (const e of a.store.query({})) listed.push([e.key.toString(), dec(e.value)])
    expect(listed).to.deep.equal([['/b', '2']])
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
    await a.store.delete(k)
    await syncReplica(a, b)
    expect(await valueOf(b)).to.equal('b1')
  })

  it('keeps values, deletes and heads across closing and reopening IndexedDB', async () => {
    const a = await idbReplica()
    await a.store.put(new Key('/kept'), enc('yes'))
    await a.store.put(new Key('/gone'), enc('no'))
    await a.store.delete(new Key('/gone'))
    const heads = a.store.heads().map(h => [h.cid.toString(), h.height])
    await a.close()

    const again = await replica(a.name)
    expect(await valueOf(again, new Key('/kept'))).to.equal('yes')
    expect(await again.store.has(new Key('/gone'))).to.equal(false)
    expect(again.store.heads().map(h => [h.cid.toString(), h.height])).to.deep.equal(heads)
    expect(heads[0][1]).to.equal(3)
  })
})
