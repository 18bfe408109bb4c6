/**
 * The `put` and `delete` events of merges report changes of visible values
 * only: a merge that leaves a key's visible value as it was fires nothing,
 * and a tombstone with no element id is ignored (go-ds-crdt never writes
 * one; a hostile peer might).
 */

import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { encodeBroadcast, encodeNode } from '../src/index.js'
import { dec, enc, memoryReplica, syncReplica } from './fixtures/stores.js'
import type { MemoryReplica } from './fixtures/stores.js'
import type { Pair } from 'interface-datastore'

const k = new Key('/k')

function record (r: MemoryReplica): string[] {
  const events: string[] = []
  r.store.addEventListener('put', evt => { events.push(`put ${evt.detail.key.toString()}=${dec(evt.detail.value)}`) })
  r.store.addEventListener('delete', evt => { events.push(`delete ${evt.detail.key.toString()}`) })
  return events
}

describe('merge events report visible changes only', () => {
  let open: MemoryReplica[] = []

  async function replica (): Promise<MemoryReplica> {
    const r = await memoryReplica({ repairInterval: 0 })
    open.push(r)
    return r
  }

  afterEach(async () => {
    await Promise.all(open.map(async r => r.store.stop()))
    open = []
  })

  it('a put and its delete merged together (the delete first, as a walk goes) fire nothing', async () => {
    const writer = await replica()
    await writer.store.put(k, enc('short-lived'))
    await writer.store.delete(k)
    const reader = await replica()
    const events = record(reader)
    await syncReplica(writer, reader)
    expect(events).to.deep.equal([])
    expect(await reader.store.has(k)).to.equal(false)
  })

  it('a delete of a hidden element leaves the visible value and fires nothing', async () => {
    const low = await replica()
    const high = await replica()
    await low.store.put(k, enc('low'))
    await high.store.put(new Key('/x'), enc('1'))
    await high.store.put(k, enc('high'))
    const deleter = await replica()
    await syncReplica(low, deleter)
    await deleter.store.delete(k) // tombstones "low" only

    const observer = await replica()
    await syncReplica(low, observer)
    await syncReplica(high, observer)
    expect(dec(await observer.store.get(k))).to.equal('high')
    const events = record(observer)
    await syncReplica(deleter, observer)
    expect(events).to.deep.equal([])
    expect(dec(await observer.store.get(k))).to.equal('high')
  })

  it('a local put fires one put; a remote delete of every element of a key fires one delete', async () => {
    const a = await replica()
    const b = await replica()
    await a.store.put(k, enc('a'))
    await b.store.put(new Key('/x'), enc('1'))
    await b.store.put(k, enc('b'))
    await syncReplica(a, b)
    const events = record(b)
    const deleter = await replica()
    await syncReplica(b, deleter)
    await b.store.put(new Key('/y'), enc('2'))
    // the deleter saw both elements of /k: its delete tombstones both
    await deleter.store.delete(k)
    await syncReplica(deleter, b)
    expect(events).to.deep.equal(['put /y=2', 'delete /k'])
  })

  it('a node whose tombstone has an empty element id is refused whole (an id must be one block key)', async () => {
    const writer = await replica()
    await writer.store.put(k, enc('v'))
    const [head] = writer.store.heads()
    const node = await encodeNode({ elements: [{ key: '/other', id: '', value: enc('o') }], tombstones: [{ key: '/k', id: '', value: new Uint8Array(0) }], priority: 2, dagName: '' }, [head.cid])
    await writer.blockstore.put(node.cid, node.bytes)
    const reader = await replica()
    await syncReplica(writer, reader)
    const events = record(reader)
    await reader.store.receive(encodeBroadcast([{ cid: node.cid, dagName: '' }]))
    expect(events).to.deep.equal([])
    expect(await reader.store.has(new Key('/other'))).to.equal(false)
    expect(dec(await reader.store.get(k))).to.equal('v')
    const tombs: string[] = []
    for await (const { key } of reader.datastore.query({ prefix: '/crdt/s/t' }) as AsyncIterable<Pair>) tombs.push(key.toString())
    expect(tombs).to.deep.equal([])
  })
})
