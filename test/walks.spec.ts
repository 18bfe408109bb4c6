/**
 * How a store fetches and walks DAG nodes, through its public API over
 * memory stores: a node announced by several heads or broadcasts at once is
 * fetched once; blocks arriving in several chunks are joined; a fetch that
 * never answers is aborted after `dagSyncerTimeout`; failures are named
 * errors that leave the branch pending; unreadable and malformed `w/`
 * records are dropped; a purge reports what it removed as events; local
 * writes fetch nothing; a fresh replica adopts the first head it hears.
 */

import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { encodeBroadcast, encodeBroadcastWithBlocks, encodeNode } from '../src/index.js'
import { StallingBlockstore, missingCid } from './fixtures/hostile-blocks.js'
import { stateOf, waitFor } from './fixtures/network.js'
import { dec, enc, memoryReplica, readBlock, syncReplica } from './fixtures/stores.js'
import type { MemoryReplica } from './fixtures/stores.js'
import type { AbortOptions } from 'interface-store'

function announce (...cids: CID[]): Uint8Array {
  return encodeBroadcast(cids.map(cid => ({ cid, dagName: '' })))
}

/** Serves another replica's blocks slowly, in `chunks` pieces, counting fetches per CID */
class SlowBlockstore extends MemoryBlockstore {
  public readonly fetches = new Map<string, number>()

  constructor (private readonly source: MemoryReplica, private readonly chunks = 1, private readonly delayMs = 30) {
    super()
  }

  override async * get (cid: CID, options?: AbortOptions): AsyncGenerator<Uint8Array> {
    if (await super.has(cid)) {
      yield * super.get(cid, options)
      return
    }
    this.fetches.set(cid.toString(), (this.fetches.get(cid.toString()) ?? 0) + 1)
    await new Promise(resolve => setTimeout(resolve, this.delayMs))
    const bytes = await readBlock(this.source.blockstore, cid)
    const size = Math.ceil(bytes.byteLength / this.chunks)
    for (let i = 0; i < bytes.byteLength; i += size) yield bytes.subarray(i, i + size)
  }
}

describe('fetching and walking DAG nodes', () => {
  let open: MemoryReplica[] = []

  async function replica (components = {}, init = {}): Promise<MemoryReplica> {
    const r = await memoryReplica({ repairInterval: 0, ...init }, components)
    open.push(r)
    return r
  }

  afterEach(async () => {
    await Promise.all(open.map(async r => r.store.stop()))
    open = []
  })

  it('a head announced by three broadcasts at once is fetched once, and so is a child two heads share', async () => {
    const writer = await replica()
    await writer.store.put(new Key('/base'), enc('base'))
    const [base] = writer.store.heads()
    const other = await replica()
    // two concurrent heads on top of the same base node
    const blocks = await readBlock(writer.blockstore, base.cid)
    await other.blockstore.put(base.cid, blocks)
    await other.store.receive(announce(base.cid))
    await writer.store.put(new Key('/w'), enc('w'))
    await other.store.put(new Key('/o'), enc('o'))
    const [left] = writer.store.heads()
    const [right] = other.store.heads()
    await writer.blockstore.put(right.cid, await readBlock(other.blockstore, right.cid))

    const slow = new SlowBlockstore(writer)
    const reader = await replica({ blockstore: slow })
    await Promise.all([
      reader.store.receive(announce(left.cid)),
      reader.store.receive(announce(left.cid)),
      reader.store.receive(announce(left.cid, right.cid))
    ])
    await reader.store.repair()
    expect(slow.fetches.get(left.cid.toString()), 'fetches of the head').to.equal(1)
    expect(slow.fetches.get(base.cid.toString()), 'fetches of the shared child').to.equal(1)
    expect(slow.fetches.get(right.cid.toString())).to.equal(1)
    expect(reader.store.heads().map(h => h.cid.toString()).sort()).to.deep.equal([left.cid.toString(), right.cid.toString()].sort())
    expect(dec(await reader.store.get(new Key('/base')))).to.equal('base')
  })

  it('a block that arrives in several chunks is joined before it is checked and decoded', async () => {
    const writer = await replica()
    await writer.store.put(new Key('/a'), enc('x'.repeat(300)))
    await writer.store.put(new Key('/b'), enc('b'))
    const slow = new SlowBlockstore(writer, 4, 1)
    const reader = await replica({ blockstore: slow })
    await reader.store.receive(announce(...writer.store.heads().map(h => h.cid)))
    expect(dec(await reader.store.get(new Key('/a')))).to.equal('x'.repeat(300))
    expect(dec(await reader.store.get(new Key('/b')))).to.equal('b')
    expect(await reader.store.pendingBranches()).to.have.lengthOf(0)
  })

  it('a fetch that never answers is aborted after dagSyncerTimeout, as a head or as a link', async () => {
    const blockstore = new StallingBlockstore()
    const reader = await replica({ blockstore }, { dagSyncerTimeout: 100 })
    await reader.store.receive(announce(await missingCid('head')))
    expect(blockstore.stalls).to.equal(1)
    expect(blockstore.aborted, 'the fetch saw its signal abort').to.equal(1)
    expect(await reader.store.pendingBranches()).to.have.lengthOf(0)
    expect(await reader.store.isDirty()).to.equal(false)

    // a node whose link never arrives waits for it (the link's claim bounds its priority): not merged, it stays pending and the store is dirty
    const writer = await replica()
    await writer.store.put(new Key('/one'), enc('1'))
    const [below] = writer.store.heads()
    await writer.store.put(new Key('/two'), enc('2'))
    const [top] = writer.store.heads()
    await blockstore.put(top.cid, await readBlock(writer.blockstore, top.cid))
    await reader.store.receive(announce(top.cid))
    expect(blockstore.aborted).to.equal(2)
    expect(await reader.store.has(new Key('/two'))).to.equal(false)
    expect((await reader.store.pendingBranches()).map(String)).to.deep.equal([top.cid.toString()])
    expect(await reader.store.isDirty()).to.equal(true)
    // the link arrives: a repair merges both
    await blockstore.put(below.cid, await readBlock(writer.blockstore, below.cid))
    await reader.store.repair()
    expect(dec(await reader.store.get(new Key('/two')))).to.equal('2')
    expect(dec(await reader.store.get(new Key('/one')))).to.equal('1')
    expect(await reader.store.isDirty()).to.equal(false)
  })

  it('unreadable w/ records are dropped; so is the record of a malformed child', async () => {
    const reader = await replica()
    await reader.datastore.put(new Key('/crdt/w/NOT-A-BLOCK-KEY!'), Uint8Array.of(0))
    expect(await reader.store.pendingBranches()).to.have.lengthOf(0)
    expect(await reader.datastore.has(new Key('/crdt/w/NOT-A-BLOCK-KEY!'))).to.equal(false)

    // a node linking a block that is not a delta: the node merges, the child is skipped for good
    const bytes = Uint8Array.of(0xff, 0xff, 0xff)
    const junkCid = CID.createV1(0x70, await sha256.digest(bytes))
    const node = await encodeNode({ elements: [{ key: '/over-junk', id: '', value: enc('v') }], tombstones: [], priority: 2, dagName: '' }, [junkCid])
    await reader.blockstore.put(node.cid, node.bytes)
    await reader.blockstore.put(junkCid, bytes)
    await reader.store.receive(announce(node.cid))
    expect(dec(await reader.store.get(new Key('/over-junk')))).to.equal('v')
    expect(await reader.store.pendingBranches()).to.have.lengthOf(0)
    expect(reader.store.heads().map(h => h.cid.toString())).to.deep.equal([node.cid.toString()])
  })

  it('purgeDAG announces the values it removes or reveals as events', async () => {
    const r = await replica()
    await r.store.put(new Key('/shared'), enc('a-default'))
    await r.store.put(new Key('/shared'), enc('z-named'), { dagName: 'app' })
    await r.store.put(new Key('/only-named'), enc('n'), { dagName: 'app' })
    expect(dec(await r.store.get(new Key('/shared')))).to.equal('z-named')
    const events: string[] = []
    r.store.addEventListener('put', evt => { events.push(`put ${evt.detail.key.toString()}=${dec(evt.detail.value)}`) })
    r.store.addEventListener('delete', evt => { events.push(`delete ${evt.detail.key.toString()}`) })
    await r.store.purgeDAG('app')
    expect(events.sort()).to.deep.equal(['delete /only-named', 'put /shared=a-default'])
    expect(dec(await r.store.get(new Key('/shared')))).to.equal('a-default')
    expect(await r.store.has(new Key('/only-named'))).to.equal(false)
  })

  it('local writes never fetch or walk the nodes they link', async () => {
    const blockstore = new CountingBlockstore()
    const r = await replica({ blockstore })
    for (let i = 0; i < 4; i++) await r.store.put(new Key(`/l/${i}`), enc(`${i}`))
    const batch = r.store.batch()
    batch.put(new Key('/l/0'), enc('again'))
    batch.delete(new Key('/l/1'))
    await batch.commit()
    expect(blockstore.gets, 'blockstore reads').to.equal(0)
    expect(r.store.heads().map(h => h.height)).to.deep.equal([5])
    expect(await r.store.pendingBranches()).to.have.lengthOf(0)
  })

  it('a fresh replica adopts a head it hears before merging it, so its first write links it even if the merge fails', async () => {
    const writer = await replica()
    await writer.store.put(new Key('/heard'), enc('h1'))
    await writer.store.put(new Key('/heard'), enc('h2'))
    const [heard] = writer.store.heads()
    const datastore = new FailingDatastore()
    const reader = await replica({ datastore })
    for await (const { cid } of writer.blockstore.getAll()) await reader.blockstore.put(cid, await readBlock(writer.blockstore, cid))

    // the adoption commits, the merge of the head does not
    datastore.failAfter = 1
    await reader.store.receive(announce(heard.cid))
    datastore.failAfter = undefined
    expect(datastore.failed, 'batches refused').to.equal(1)
    expect(await reader.store.has(new Key('/heard'))).to.equal(false)
    expect(reader.store.heads().map(h => `${h.cid}@${h.height}`)).to.deep.equal([`${heard.cid}@2`])

    await reader.store.put(new Key('/mine'), enc('m'))
    const [mine] = reader.store.heads()
    expect(mine.height).to.equal(3)
    // the write hands the linked, unmerged head to a walk of its own
    await waitFor(async () => reader.store.has(new Key('/heard')), 10_000, 'the adopted head to merge')
    await reader.store.repair()
    expect(dec(await reader.store.get(new Key('/heard')))).to.equal('h2')
    expect(reader.store.heads().map(h => h.cid.toString())).to.deep.equal([mine.cid.toString()])
    expect(await reader.store.pendingBranches()).to.have.lengthOf(0)
  })

  describe('a received head whose links are all merged', () => {
    /** A writer with two puts, and a reader (over `datastore`) that merged the first and holds the second's block */
    async function pair (datastore = new RecordingDatastore()): Promise<{ reader: MemoryReplica, datastore: RecordingDatastore, second: CID }> {
      const writer = await replica()
      await writer.store.put(new Key('/first'), enc('1'))
      const [first] = writer.store.heads()
      await writer.store.put(new Key('/second'), enc('2'))
      const [second] = writer.store.heads()
      const reader = await replica({ datastore })
      for await (const { cid } of writer.blockstore.getAll()) await reader.blockstore.put(cid, await readBlock(writer.blockstore, cid))
      await reader.store.receive(announce(first.cid))
      expect(dec(await reader.store.get(new Key('/first')))).to.equal('1')
      return { reader, datastore, second: second.cid }
    }

    it('is merged in one datastore batch, with no `w/` entry written before it', async () => {
      const { reader, datastore, second } = await pair()
      datastore.reset()
      await reader.store.receive(announce(second))
      expect(dec(await reader.store.get(new Key('/second')))).to.equal('2')
      // before: addRoot's put of the head's `w/` entry, then the merge's batch
      expect(datastore.puts.filter(k => k.includes('/w/')), 'w/ entries put').to.deep.equal([])
      expect(datastore.batches, 'batches').to.equal(1)
      expect(reader.store.heads().map(h => h.cid.toString())).to.deep.equal([second.toString()])
      expect(await reader.store.pendingBranches()).to.have.lengthOf(0)
      expect(await reader.store.isDirty()).to.equal(false)
    })

    it('gets its `w/` entry when its merge fails, and a repair merges it', async () => {
      const { reader, datastore, second } = await pair()
      datastore.failAfter = 0
      await reader.store.receive(announce(second))
      datastore.failAfter = undefined
      expect(datastore.failed, 'batches refused').to.equal(1)
      expect(await reader.store.has(new Key('/second'))).to.equal(false)
      expect((await reader.store.pendingBranches()).map(c => c.toString())).to.deep.equal([second.toString()])
      expect(await reader.store.isDirty()).to.equal(true)
      await reader.store.repair()
      expect(dec(await reader.store.get(new Key('/second')))).to.equal('2')
      expect(reader.store.heads().map(h => h.cid.toString())).to.deep.equal([second.toString()])
      expect(await reader.store.pendingBranches()).to.have.lengthOf(0)
    })

    it('is given up, recorded, when it claims more priority than its links allow', async () => {
      const { reader } = await pair()
      const [head] = reader.store.heads()
      const liar = await encodeNode({ elements: [{ key: '/first', id: '', value: enc('liar') }], tombstones: [], priority: 9, dagName: '' }, [head.cid])
      await reader.blockstore.put(liar.cid, liar.bytes)
      await reader.store.receive(announce(liar.cid))
      expect(dec(await reader.store.get(new Key('/first')))).to.equal('1')
      expect((await reader.store.givenUpBranches()).map(g => g.cid.toString())).to.deep.equal([liar.cid.toString()])
      expect(await reader.store.pendingBranches()).to.have.lengthOf(0)
      expect(reader.store.heads().map(h => h.cid.toString())).to.deep.equal([head.cid.toString()])
    })
  })

  it('a head whose block its broadcast carries is merged without reading the block back or hashing it twice', async () => {
    const writer = await replica()
    await writer.store.put(new Key('/carried'), enc('c'))
    const [head] = writer.store.heads()
    const bytes = await readBlock(writer.blockstore, head.cid)
    const blockstore = new CountingBlockstore()
    const reader = await replica({ blockstore })
    await reader.store.receive(encodeBroadcastWithBlocks([{ cid: head.cid, dagName: '' }], [{ cid: head.cid, bytes }], 1024))
    expect(dec(await reader.store.get(new Key('/carried')))).to.equal('c')
    // before: the head's turn read it back through the blockstore
    expect(blockstore.gets, 'blockstore reads').to.equal(0)
    expect(await blockstore.has(head.cid), 'stored').to.equal(true)

    // a carried block that does not hash to its CID is dropped: the head is fetched (and here not found)
    const other = await replica()
    await other.store.put(new Key('/other'), enc('o'))
    const [otherHead] = other.store.heads()
    await reader.store.receive(encodeBroadcastWithBlocks([{ cid: otherHead.cid, dagName: '' }], [{ cid: otherHead.cid, bytes }], 1024))
    expect(await reader.store.has(new Key('/other'))).to.equal(false)
    expect(blockstore.gets, 'blockstore reads').to.equal(1)
  })

  it('a walk keeps at most numWorkers fetches in flight; a repair with nothing pending does nothing', async () => {
    const writers: MemoryReplica[] = []
    for (let i = 0; i < 8; i++) {
      const w = await replica()
      await w.store.put(new Key(`/w/${i}`), enc(`${i}`))
      writers.push(w)
    }
    // a node linking the eight heads: its walk fetches eight children
    const top = await replica()
    for (const w of writers) await syncReplica(w, top)
    await top.store.put(new Key('/top'), enc('top'))
    let inFlight = 0
    let most = 0
    const slow = new SlowBlockstore(top, 1, 20)
    const get = slow.get.bind(slow)
    slow.get = async function * (cid, options) {
      inFlight++
      most = Math.max(most, inFlight)
      try {
        yield * get(cid, options)
      } finally {
        inFlight--
      }
    }
    const reader = await replica({ blockstore: slow }, { numWorkers: 2 })
    await reader.store.receive(announce(...top.store.heads().map(h => h.cid)))
    expect((await stateOf(reader.store)).length).to.equal(9)
    expect(most).to.be.within(1, 2)
    // the head and its eight children were fetched (fetchedBlocks counts every block received)
    expect(reader.store.stats().fetchedBlocks).to.equal(9)

    expect(await reader.store.isDirty()).to.equal(false)
    await reader.store.repair()
    expect(await reader.store.isDirty()).to.equal(false)
    expect(await reader.store.pendingBranches()).to.have.lengthOf(0)
  })
})

/** A blockstore that counts every read */
class CountingBlockstore extends MemoryBlockstore {
  public gets = 0

  override async * get (cid: CID, options?: AbortOptions): AsyncGenerator<Uint8Array> {
    this.gets++
    yield * super.get(cid, options)
  }
}

/** A datastore whose batch commits fail once `failAfter` more have succeeded */
class FailingDatastore extends MemoryDatastore {
  public failAfter?: number
  public failed = 0

  override batch (): ReturnType<MemoryDatastore['batch']> {
    const batch = super.batch()
    const commit = batch.commit.bind(batch)
    batch.commit = async (options?: AbortOptions) => {
      if (this.failAfter != null) {
        if (this.failAfter === 0) {
          this.failed++
          throw new Error('injected batch failure')
        }
        this.failAfter--
      }
      await commit(options)
    }
    return batch
  }
}

/** A FailingDatastore that also records the keys put outside batches, and counts batches committed */
class RecordingDatastore extends FailingDatastore {
  public puts: string[] = []
  public batches = 0

  reset (): void {
    this.puts = []
    this.batches = 0
  }

  override async put (key: Key, value: Uint8Array, options?: AbortOptions): Promise<Key> {
    this.puts.push(key.toString())
    return super.put(key, value, options)
  }

  override batch (): ReturnType<MemoryDatastore['batch']> {
    const batch = super.batch()
    const commit = batch.commit.bind(batch)
    batch.commit = async (options?: AbortOptions) => {
      await commit(options)
      this.batches++
    }
    return batch
  }
}
