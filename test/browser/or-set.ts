/**
 * OR-set and store basics in the browser, on IndexedDB: the merge rules
 * shared with the Node specs (test/fixtures/cases/or-set.ts), and state that
 * survives closing and reopening the databases (what a page reload does).
 */

import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { orSetCases } from '../fixtures/cases/or-set.js'
import { dec, enc, idbReplica, syncReplica } from './fixtures/stores.js'
import type { Replica } from './fixtures/stores.js'

const k = new Key('/k')

async function valueOf (r: Replica, key = k): Promise<string | undefined> {
  return await r.store.has(key) ? dec(await r.store.get(key)) : undefined
}

describe('OR-set on IndexedDB', () => {
  orSetCases<Replica>({ replica: async init => idbReplica(undefined, init), sync: syncReplica, close: async r => { await r.close() } })

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
