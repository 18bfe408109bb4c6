/**
 * The datastore reads a merge makes, counted on a MemoryDatastore: the
 * OR-set reads what a delta of many keys needs (priorities, and tombstones
 * for a remote node) with one prefix scan instead of a read per key; a scan
 * that had to be cut short makes the next merges read that kind of key
 * point by point. These are the read patterns
 * or-set.ts documents; a change that multiplies reads shows here.
 */

import { expect } from 'aegir/chai'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import { enc, memoryReplica, syncReplica } from './fixtures/stores.js'
import type { MemoryReplica } from './fixtures/stores.js'
import type { Query, KeyQuery } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'

/** Counts reads by kind, for keys (or query prefixes) matching `watch` */
class CountingDatastore extends MemoryDatastore {
  public watch = /^$/
  public counts = { get: 0, has: 0, query: 0 }

  reset (watch: RegExp): void {
    this.watch = watch
    this.counts = { get: 0, has: 0, query: 0 }
  }

  override async get (key: Key, options?: AbortOptions): Promise<Uint8Array> {
    if (this.watch.test(key.toString())) this.counts.get++
    return super.get(key, options)
  }

  override async has (key: Key, options?: AbortOptions): Promise<boolean> {
    if (this.watch.test(key.toString())) this.counts.has++
    return super.has(key, options)
  }

  override query (q: Query, options?: AbortOptions): ReturnType<MemoryDatastore['query']> {
    if (q.prefix != null && this.watch.test(q.prefix)) this.counts.query++
    return super.query(q, options)
  }

  override queryKeys (q: KeyQuery, options?: AbortOptions): ReturnType<MemoryDatastore['queryKeys']> {
    if (q.prefix != null && this.watch.test(q.prefix)) this.counts.query++
    return super.queryKeys(q, options)
  }
}

const N = 20
const PRIORITIES = /^\/crdt\/s\/k\/b\/.*(\/p)?$/
const TOMBS = /^\/crdt\/s\/t\/b\//

describe('reads a merge makes', () => {
  let open: MemoryReplica[] = []

  async function replica (datastore = new CountingDatastore()): Promise<MemoryReplica & { counting: CountingDatastore }> {
    const r = await memoryReplica({ repairInterval: 0 }, { datastore })
    open.push(r)
    return Object.assign(r, { counting: datastore })
  }

  async function putBatch (r: MemoryReplica, keys: string[], value: string): Promise<void> {
    const batch = r.store.batch()
    for (const key of keys) batch.put(new Key(key), enc(value))
    await batch.commit()
  }

  afterEach(async () => {
    await Promise.all(open.map(async r => r.store.stop()))
    open = []
  })

  const keys = Array.from({ length: N }, (_, i) => `/b/${String(i).padStart(2, '0')}`)

  it(`a local batch of ${N} keys reads their priorities with one scan, new or overwritten`, async () => {
    const r = await replica()
    r.counting.reset(PRIORITIES)
    await putBatch(r, keys, 'one')
    expect(r.counting.counts).to.deep.equal({ get: 0, has: 0, query: 1 })
    r.counting.reset(PRIORITIES)
    await putBatch(r, keys, 'two')
    expect(r.counting.counts).to.deep.equal({ get: 0, has: 0, query: 1 })
  })

  it(`a remote node of ${N} keys reads priorities and tombstones with one scan each`, async () => {
    const writer = await replica()
    await putBatch(writer, keys, 'one')
    const reader = await replica()
    reader.counting.reset(TOMBS)
    await syncReplica(writer, reader)
    expect(reader.counting.counts, 'tombstone reads').to.deep.equal({ get: 0, has: 0, query: 1 })
    await putBatch(writer, keys, 'two')
    reader.counting.reset(PRIORITIES)
    await syncReplica(writer, reader)
    expect(reader.counting.counts, 'priority reads').to.deep.equal({ get: 0, has: 0, query: 1 })
    expect(reader.store.heads().map(h => h.cid.toString())).to.deep.equal(writer.store.heads().map(h => h.cid.toString()))
  })

  it('after a scan is cut short, the next merges read those keys point by point; other scans go on', async () => {
    const writer = await replica()
    // many other entries under the same prefix make the scan for the batch's keys too long
    await putBatch(writer, Array.from({ length: 200 }, (_, i) => `/b/x${i}`), 'filler')
    const reader = await replica()
    await syncReplica(writer, reader)

    await putBatch(writer, keys, 'one')
    reader.counting.reset(PRIORITIES)
    await syncReplica(writer, reader)
    // the scan reads its limit (2 per key + 64) and stops, then the undecided keys are read one by one
    expect(reader.counting.counts.query).to.equal(1)
    expect(reader.counting.counts.get).to.equal(N)

    // the next merge does not scan again
    await putBatch(writer, keys, 'two')
    reader.counting.reset(PRIORITIES)
    await syncReplica(writer, reader)
    expect(reader.counting.counts).to.deep.equal({ get: N, has: 0, query: 0 })

    // tombstones have no fillers: their scans were never cut short
    await putBatch(writer, keys, 'three')
    reader.counting.reset(TOMBS)
    await syncReplica(writer, reader)
    expect(reader.counting.counts).to.deep.equal({ get: 0, has: 0, query: 1 })

    // once 32 merges have followed the cut (two so far), scans are tried again
    for (let i = 0; i < 30; i++) {
      await writer.store.put(new Key('/c'), enc(`${i}`))
      await syncReplica(writer, reader)
    }
    await putBatch(writer, keys, 'four')
    reader.counting.reset(PRIORITIES)
    await syncReplica(writer, reader)
    expect(reader.counting.counts.query, 'a scan again').to.equal(1)
  })
})
