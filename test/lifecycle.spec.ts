/**
 * The store's lifecycle (start idempotent, stop/start cycles), `synced()`
 * and the meaning of `stats()` figures, in process with a hand-fed
 * broadcaster and a blockstore that serves another replica's blocks only
 * when the test lets it.
 */

import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import all from 'it-all'
import { DefaultCRDTDatastore } from '../src/engine/crdt-datastore.js'
import { createCRDTDatastore, encodeBroadcast, PayloadQueue } from '../src/index.js'
// the implementation class, reached past the entry points: only a test builds a store without starting it
import { stateOf } from './fixtures/network.js'
import { dec, enc, memoryReplica } from './fixtures/stores.js'
import type { Broadcaster } from '../src/index.js'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/** A broadcaster the test feeds by hand */
class HandBroadcaster implements Broadcaster {
  readonly queue = new PayloadQueue(100)
  async broadcast (): Promise<void> {}
  async next (options?: AbortOptions): Promise<Uint8Array> {
    return this.queue.next(options)
  }
}

/** Serves blocks from `source` once `open()` is called; counts what it served */
class GatedBlockstore extends MemoryBlockstore {
  private readonly source: MemoryBlockstore
  private gate: Promise<void>
  open!: () => void

  constructor (source: MemoryBlockstore) {
    super()
    this.source = source
    this.gate = new Promise(resolve => { this.open = resolve })
  }

  override async * get (cid: CID, options?: AbortOptions): AsyncGenerator<Uint8Array> {
    if (!(await super.has(cid))) {
      await Promise.race([this.gate, new Promise((resolve, reject) => {
        options?.signal?.addEventListener('abort', () => { reject(options.signal?.reason) }, { once: true })
      })])
      for await (const chunk of this.source.get(cid)) await super.put(cid, chunk)
    }
    yield * super.get(cid, options)
  }
}

describe('lifecycle, synced() and stats()', function () {
  this.timeout(30_000)

  it('start() is idempotent, concurrent starts share one, and stop()/start() cycles keep the data', async () => {
    const datastore = new MemoryDatastore()
    const store = new DefaultCRDTDatastore({ datastore, blockstore: new MemoryBlockstore() })
    await store.stop() // stopping a store that never ran does nothing
    await Promise.all([store.start(), store.start()])
    await store.start()
    await store.put(new Key('/a'), enc('1'))
    for (let cycle = 0; cycle < 3; cycle++) {
      await Promise.all([store.stop(), store.stop()])
      await expect(store.put(new Key('/b'), enc('x'))).to.eventually.be.rejected.with.property('name', 'DatastoreStoppedError')
      expect(await datastore.has(new Key('/crdt/bs'))).to.equal(false)
      await store.start()
      expect(await datastore.has(new Key('/crdt/bs'))).to.equal(true)
      await store.put(new Key(`/cycle/${cycle}`), enc(String(cycle)))
    }
    expect(await stateOf(store)).to.deep.equal(['/a=1', '/cycle/0=0', '/cycle/1=1', '/cycle/2=2'])
    expect(store.heads()).to.have.length(1)
    expect(store.heads()[0].height).to.equal(4)
    await store.stop()
  })

  it('a stopped store still serves reads from its local state; writes need start()', async () => {
    const store = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore: new MemoryBlockstore() })
    await store.put(new Key('/kept'), enc('yes'))
    await store.stop()
    expect(dec(await store.get(new Key('/kept')))).to.equal('yes')
    const err = await store.delete(new Key('/kept')).then(() => undefined, (e: Error) => e)
    expect(err?.name).to.equal('DatastoreStoppedError')
    expect(err?.message).to.include('start()')
  })

  it('a store not started yet serves reads from the state already in its datastore; writes and replication methods throw until start()', async () => {
    const datastore = new MemoryDatastore()
    const blockstore = new MemoryBlockstore()
    const first = await createCRDTDatastore({ datastore, blockstore })
    await first.put(new Key('/kept'), enc('yes'))
    await first.put(new Key('/also'), enc('too'))
    await first.stop()

    // what Helia does: construct, read, and only later start
    const store = new DefaultCRDTDatastore({ datastore, blockstore })
    expect(dec(await store.get(new Key('/kept')))).to.equal('yes')
    expect(await store.has(new Key('/also'))).to.equal(true)
    expect(await stateOf(store)).to.deep.equal(['/also=too', '/kept=yes'])
    expect((await all(store.getMany([new Key('/kept')]))).map(p => dec(p.value))).to.deep.equal(['yes'])
    expect(store.heads()).to.deep.equal([])
    for (const [name, call] of [
      ['put', async () => store.put(new Key('/new'), enc('x'))],
      ['delete', async () => store.delete(new Key('/kept'))],
      ['batch', () => store.batch()],
      ['synced', async () => store.synced()]
    ] as Array<[string, () => unknown]>) {
      const err = await (async () => call())().then(() => undefined, (e: Error) => e)
      expect(err?.name, name).to.equal('DatastoreStoppedError')
      expect(err?.message, name).to.include('has not been started')
    }
    await store.start()
    expect(store.heads()).to.have.lengthOf(1)
    await store.put(new Key('/new'), enc('x'))
    expect(await stateOf(store)).to.deep.equal(['/also=too', '/kept=yes', '/new=x'])
    await store.stop()
  })

  it('synced() waits until every announced head is merged, counts heads fetched for broadcasts in fetchedBlocks, and honours its signal', async () => {
    const writer = await memoryReplica()
    for (let i = 0; i < 3; i++) await writer.store.put(new Key(`/k${i}`), enc(String(i)))
    const broadcaster = new HandBroadcaster()
    const blockstore = new GatedBlockstore(writer.blockstore)
    const reader = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore, broadcaster }, { repairInterval: 0 })
    try {
      await reader.synced() // nothing announced yet
      const head = writer.store.heads()[0]
      broadcaster.queue.push(encodeBroadcast([{ cid: head.cid, dagName: '' }]))

      let done = false
      const synced = reader.synced().then(() => { done = true })
      // the payload is read at once, but no block can arrive until the gate opens
      for (let i = 0; i < 50 && reader.stats().receivedBroadcasts === 0; i++) await new Promise(resolve => setTimeout(resolve, 10))
      expect(reader.stats().receivedBroadcasts).to.equal(1)
      await new Promise(resolve => setTimeout(resolve, 100))
      expect(done).to.equal(false)

      const aborted = new AbortController()
      const waiting = reader.synced({ signal: aborted.signal })
      aborted.abort()
      await expect(waiting).to.eventually.be.rejected.with.property('name', 'AbortError')
      await expect(reader.synced({ signal: AbortSignal.abort() })).to.eventually.be.rejected.with.property('name', 'AbortError')

      blockstore.open()
      await synced
      // everything announced before the call is merged when it resolves
      expect(await stateOf(reader)).to.deep.equal(['/k0=0', '/k1=1', '/k2=2'])
      // the head fetched for the broadcast counts, not only the two walked below it
      expect(reader.stats().fetchedBlocks).to.equal(3)
      expect(reader.stats().queuedJobs).to.equal(0)
    } finally {
      await reader.stop()
      await writer.store.stop()
    }
    await expect(reader.synced()).to.eventually.be.rejected.with.property('name', 'DatastoreStoppedError')
  })

  it('synced() also covers heads walked in parallel under multiHeadProcessing', async () => {
    const writers = [await memoryReplica(), await memoryReplica()]
    const source = new MemoryBlockstore()
    for (const [i, w] of writers.entries()) {
      await w.store.put(new Key(`/w${i}`), enc(String(i)), { dagName: `dag${i}` })
      await w.store.put(new Key(`/w${i}/more`), enc(String(i)), { dagName: `dag${i}` })
      for await (const { cid, bytes } of w.blockstore.getAll()) await source.put(cid, bytes)
    }
    const broadcaster = new HandBroadcaster()
    const blockstore = new GatedBlockstore(source)
    const reader = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore, broadcaster }, { repairInterval: 0, multiHeadProcessing: true })
    try {
      broadcaster.queue.push(encodeBroadcast(writers.map(w => ({ cid: w.store.heads()[0].cid, dagName: w.store.heads()[0].dagName }))))
      for (let i = 0; i < 50 && reader.stats().receivedBroadcasts === 0; i++) await new Promise(resolve => setTimeout(resolve, 10))
      const synced = reader.synced()
      blockstore.open()
      await synced
      expect(await stateOf(reader)).to.deep.equal(['/w0/more=0', '/w0=0', '/w1/more=1', '/w1=1'])
      expect(reader.stats().fetchedBlocks).to.equal(4)
    } finally {
      await reader.stop()
      for (const w of writers) await w.store.stop()
    }
  })
})
