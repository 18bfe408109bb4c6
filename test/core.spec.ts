/**
 * Core behaviours that a single planted bug must break, each checked
 * deterministically (no random histories, no timing): hash verification of
 * fetched blocks, the merge rule when a delete reveals the next-best value,
 * tombstones a delete carries, the `w/` records of walks, and the heads left
 * after multi-node walks.
 *
 * Everything goes through the public API over memory stores; where a test
 * needs a state no API call produces (a `w/` record left for a processed
 * node), it writes that one datastore key itself, using the layout of
 * shared/spec/wire-format.md §6.
 */

import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import { sha512 } from 'multiformats/hashes/sha2'
import { blockKey } from '../src/codec/block-key.js'
import { decodeNode, encodeBroadcast, encodeNode } from '../src/index.js'
import { dec, enc, memoryReplica, readBlock, syncReplica } from './fixtures/stores.js'
import type { MemoryReplica } from './fixtures/stores.js'
import type { AbortOptions } from 'interface-store'

const k = new Key('/k')

/** A blockstore that answers some CIDs with other bytes, as a lying or broken peer would */
class ForgingBlockstore extends MemoryBlockstore {
  public readonly forgeries = new Map<string, Uint8Array>()
  /** Forged answers given */
  public served = 0

  override async * get (cid: CID, options?: AbortOptions): AsyncGenerator<Uint8Array> {
    const forged = this.forgeries.get(cid.toString())
    if (forged != null) {
      this.served++
      yield forged
      return
    }
    yield * super.get(cid, options)
  }
}

async function copyBlocks (from: MemoryReplica, to: { put(cid: CID, bytes: Uint8Array): unknown }): Promise<void> {
  for await (const { cid } of from.blockstore.getAll()) {
    await to.put(cid, await readBlock(from.blockstore, cid))
  }
}

function announce (...cids: CID[]): Uint8Array {
  return encodeBroadcast(cids.map(cid => ({ cid, dagName: '' })))
}

async function valueOf (r: MemoryReplica, key = k): Promise<string | undefined> {
  return await r.store.has(key) ? dec(await r.store.get(key)) : undefined
}

function cids (r: MemoryReplica): string[] {
  return r.store.heads().map(h => h.cid.toString()).sort()
}

describe('core behaviours a planted bug must break', () => {
  let open: MemoryReplica[] = []

  async function replica (components = {}): Promise<MemoryReplica> {
    const r = await memoryReplica({ repairInterval: 0 }, components)
    open.push(r)
    return r
  }

  afterEach(async () => {
    await Promise.all(open.map(async r => r.store.stop()))
    open = []
  })

  describe('hash verification of fetched blocks', () => {
    it('a head answered with another node\'s bytes is not merged, leaves nothing behind, and merges once the true block arrives', async () => {
      const writer = await replica()
      const forger = await replica()
      await writer.store.put(k, enc('true'))
      await forger.store.put(k, enc('forged'))
      const [head] = writer.store.heads()
      const [forgedHead] = forger.store.heads()

      const blockstore = new ForgingBlockstore()
      blockstore.forgeries.set(head.cid.toString(), await readBlock(forger.blockstore, forgedHead.cid))
      const reader = await replica({ blockstore })
      await reader.store.receive(announce(head.cid))

      expect(blockstore.served, 'the forged bytes were served').to.equal(1)
      expect(await valueOf(reader)).to.equal(undefined)
      expect(reader.store.heads()).to.have.lengthOf(0)
      expect(await reader.store.pendingBranches()).to.have.lengthOf(0)
      await reader.store.put(new Key('/still'), enc('serving'))
      expect(await valueOf(reader, new Key('/still'))).to.equal('serving')

      blockstore.forgeries.clear()
      await copyBlocks(writer, blockstore)
      await reader.store.receive(announce(head.cid))
      expect(await valueOf(reader)).to.equal('true')
    })

    it('a link answered with another node\'s bytes stays pending, the store is dirty, and repair takes the true block', async () => {
      const writer = await replica()
      const forger = await replica()
      await writer.store.put(k, enc('true'))
      const [below] = writer.store.heads()
      await writer.store.put(new Key('/top'), enc('top'))
      const [top] = writer.store.heads()
      await forger.store.put(k, enc('forged'))
      const [forgedHead] = forger.store.heads()

      const blockstore = new ForgingBlockstore()
      await copyBlocks(writer, blockstore)
      blockstore.forgeries.set(below.cid.toString(), await readBlock(forger.blockstore, forgedHead.cid))
      const reader = await replica({ blockstore })
      await reader.store.receive(announce(top.cid))

      expect(blockstore.served).to.be.greaterThan(0)
      // top waits for its link (whose claim bounds top's): nothing merged, top pending (and adopted as the head)
      expect(await valueOf(reader, new Key('/top'))).to.equal(undefined)
      expect(await valueOf(reader)).to.equal(undefined)
      expect((await reader.store.pendingBranches()).map(String)).to.deep.equal([top.cid.toString()])
      expect(await reader.store.isDirty()).to.equal(true)
      expect(cids(reader)).to.deep.equal([top.cid.toString()])

      blockstore.forgeries.clear()
      await reader.store.repair()
      expect(await valueOf(reader)).to.equal('true')
      expect(await valueOf(reader, new Key('/top'))).to.equal('top')
      expect(await reader.store.pendingBranches()).to.have.lengthOf(0)
      expect(await reader.store.isDirty()).to.equal(false)
      expect(cids(reader)).to.deep.equal([top.cid.toString()])
    })

    it('a head addressed by a sha2-512 CID is refused before any fetch (only dag-pb sha2-256 CIDs are usable)', async () => {
      const built = await encodeNode({ elements: [{ key: '/k', id: '', value: enc('512') }], tombstones: [], priority: 1, dagName: '' }, [])
      const cid = CID.createV1(0x70, await sha512.digest(built.bytes))
      const blockstore = new MemoryBlockstore()
      await blockstore.put(cid, built.bytes)
      const reader = await replica({ blockstore })
      await reader.store.receive(announce(cid))
      expect(await valueOf(reader)).to.equal(undefined)
      expect(cids(reader)).to.deep.equal([])
    })
  })

  describe('a delete reveals the next-best live value', () => {
    /**
     * `deleter` deletes the one element it knows; the others wrote
     * concurrently and their elements survive. Returns the observer after
     * it merged the writers first, then the delete.
     */
    async function afterDelete (setup: (writers: MemoryReplica[]) => Promise<void>, count: number): Promise<MemoryReplica> {
      const writers: MemoryReplica[] = []
      for (let i = 0; i < count; i++) writers.push(await replica())
      const first = await replica()
      const deleter = await replica()
      // the deleted element has the highest priority, so it is the visible value until the delete
      for (let i = 0; i < 4; i++) await first.store.put(new Key(`/filler/${i}`), enc('f'))
      await first.store.put(k, enc('deleted'))
      await syncReplica(first, deleter)
      await deleter.store.delete(k)
      await setup(writers)

      const observer = await replica()
      for (const w of writers) await syncReplica(w, observer)
      await syncReplica(first, observer)
      expect(await valueOf(observer), 'before the delete').to.equal('deleted')
      await syncReplica(deleter, observer)
      return observer
    }

    it('equal priorities: the byte-wise greatest value wins, whatever order the elements came in', async () => {
      for (const values of [['b', 'c', 'a'], ['c', 'a', 'b'], ['a', 'b', 'c']]) {
        const observer = await afterDelete(async writers => {
          for (const [i, w] of writers.entries()) await w.store.put(k, enc(values[i]))
        }, 3)
        expect(await valueOf(observer), values.join()).to.equal('c')
      }
    })

    it('the highest remaining priority wins over a greater value', async () => {
      const observer = await afterDelete(async ([low, high]) => {
        await low.store.put(k, enc('z-priority-1'))
        await high.store.put(new Key('/x'), enc('1'))
        await high.store.put(new Key('/x'), enc('2'))
        await high.store.put(k, enc('a-priority-3'))
      }, 2)
      expect(await valueOf(observer)).to.equal('a-priority-3')
    })

    it('with every element deleted, the key is gone', async () => {
      const a = await replica()
      const b = await replica()
      await a.store.put(k, enc('one'))
      await syncReplica(a, b)
      await b.store.put(k, enc('two'))
      await b.store.delete(k)
      await syncReplica(b, a)
      expect(await valueOf(a)).to.equal(undefined)
      expect(await a.store.has(k)).to.equal(false)
    })
  })

  describe('tombstones a delete carries', () => {
    it('a delete tombstones only the elements not deleted yet, locally or by another replica', async () => {
      const a = await replica()
      const b = await replica()
      await a.store.put(k, enc('one'))
      const [one] = a.store.heads()
      await syncReplica(a, b)
      await b.store.delete(k) // tombstones "one"
      await syncReplica(b, a)
      await a.store.put(k, enc('two'))
      const [two] = a.store.heads()
      await a.store.delete(k)
      const [second] = a.store.heads()
      await a.store.put(k, enc('three'))
      const [three] = a.store.heads()
      await a.store.delete(k)
      const [third] = a.store.heads()

      const tombsOf = async (cid: CID): Promise<string[]> => decodeNode(cid, await readBlock(a.blockstore, cid)).delta.tombstones.map(t => `${t.key} ${t.id}`)
      expect(await tombsOf(second.cid)).to.deep.equal([`/k ${blockKey(two.cid)}`])
      expect(await tombsOf(third.cid)).to.deep.equal([`/k ${blockKey(three.cid)}`])
      expect(blockKey(one.cid)).to.not.equal(blockKey(two.cid))
      expect(await valueOf(a)).to.equal(undefined)
    })

    it('deleting a key whose elements are all deleted writes no node', async () => {
      const a = await replica()
      await a.store.put(k, enc('one'))
      await a.store.delete(k)
      const before = cids(a)
      await a.store.delete(k)
      expect(cids(a)).to.deep.equal(before)
    })
  })

  describe('walk records (w/)', () => {
    it('a w/ record left for an already processed node is cleared by repair, changing nothing else', async () => {
      for (const mark of [Uint8Array.of(0), Uint8Array.of(1)]) {
        const writer = await replica()
        await writer.store.put(k, enc('v1'))
        const [first] = writer.store.heads()
        await writer.store.put(k, enc('v2'))
        const reader = await replica()
        await syncReplica(writer, reader)
        const heads = cids(reader)
        expect(await valueOf(reader)).to.equal('v2')

        // the record a walk writes for an unprocessed child, left behind for a processed one
        await reader.datastore.put(new Key(`/crdt/w${blockKey(first.cid)}`), mark)
        expect((await reader.store.pendingBranches()).map(String)).to.deep.equal([first.cid.toString()])
        await reader.store.markDirty()
        await reader.store.repair()

        expect(await reader.store.pendingBranches()).to.have.lengthOf(0)
        expect(await reader.store.isDirty()).to.equal(false)
        expect(cids(reader)).to.deep.equal(heads)
        expect(await valueOf(reader)).to.equal('v2')
      }
    })

    it('a node whose parent was processed first is not made a head when it arrives', async () => {
      // top links two heads of priority 1: `other` alone allows its claim of 2
      const writer = await replica()
      const second = await replica()
      await writer.store.put(k, enc('v1'))
      const [below] = writer.store.heads()
      await second.store.put(new Key('/other'), enc('o'))
      await syncReplica(second, writer)
      await writer.store.put(new Key('/top'), enc('top'))
      const [top] = writer.store.heads()
      expect(decodeNode(top.cid, await readBlock(writer.blockstore, top.cid)).links).to.have.lengthOf(2)

      const blockstore = new ForgingBlockstore()
      await copyBlocks(writer, blockstore)
      // the child is unreadable at first: the parent merges (its other link allows its claim) and the child stays pending (COVERED)
      blockstore.forgeries.set(below.cid.toString(), Uint8Array.of(1, 2, 3))
      const reader = await replica({ blockstore })
      await reader.store.receive(announce(top.cid))
      expect(cids(reader)).to.deep.equal([top.cid.toString()])

      // the child now arrives announced as a head by itself: it merges below the parent
      blockstore.forgeries.clear()
      await reader.store.receive(announce(below.cid))
      expect(await valueOf(reader)).to.equal('v1')
      expect(cids(reader)).to.deep.equal([top.cid.toString()])
      expect(await reader.store.pendingBranches()).to.have.lengthOf(0)
      expect(reader.store.heads().map(h => h.height)).to.deep.equal([2])
    })

    it('a broadcast head nothing links to becomes a head once processed; its children do not', async () => {
      const a = await replica()
      const b = await replica()
      await a.store.put(k, enc('a1'))
      await a.store.put(k, enc('a2'))
      await b.store.put(new Key('/b'), enc('b1'))
      const reader = await replica()
      await syncReplica(a, reader)
      await syncReplica(b, reader)
      expect(cids(reader)).to.deep.equal([...cids(a), ...cids(b)].sort())
      expect(reader.store.heads().map(h => h.height).sort()).to.deep.equal([1, 2])

      // a write on top of both replaces both, at height 3
      await reader.store.put(new Key('/r'), enc('r'))
      const heads = reader.store.heads()
      expect(heads).to.have.lengthOf(1)
      expect(heads[0].height).to.equal(3)
      const node = decodeNode(heads[0].cid, await readBlock(reader.blockstore, heads[0].cid))
      expect(node.links.map(String).sort()).to.deep.equal([...cids(a), ...cids(b)].sort())
    })
  })
})
