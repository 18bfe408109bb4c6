/**
 * Snapshots (#16, first slice): `store.snapshot()` is deterministic across
 * replicas that merged the same nodes in any order; installing one gives a
 * fresh replica the same visible state and heads, merges into a replica
 * with history without losing its newer writes or resurrecting deletes,
 * and a corrupt or inconsistent snapshot is refused with a named error and
 * changes nothing. A snapshot is a removal of the values it overwrote
 * (src/snapshot/removal.ts): every replica that makes, passes or installs
 * it drops them, so deletes from replicas without them (joined from the
 * snapshot, compacted) and deletes concurrent with it leave every replica
 * agreeing, and a removed value never comes back.
 */

import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { MemoryDatastore } from 'datastore-core'
import { LevelDatastore } from 'datastore-level'
import fc from 'fast-check'
import { Key } from 'interface-datastore'
import { createHeliaCRDT } from '../src/helia/index.js'
import { createCRDTDatastore, encodeBroadcast, encodeNode, readSnapshot } from '../src/index.js'
import { createReplicaNode } from '../src/node/index.js'
import { readLocalBlock } from '../src/snapshot/fetch.js'
import { decodeRoot, encodeBlock, encodeElementChunk, encodeRoot, encodeTombstoneChunk, SNAPSHOT_VERSION, snapshotIdOf } from '../src/snapshot/format.js'
import { missingCid } from './fixtures/hostile-blocks.js'
import { stateOf, waitFor } from './fixtures/network.js'
import { dec, enc, levelReplica, memoryReplica, readBlock, syncReplica, tempDir } from './fixtures/stores.js'
import type { CRDTDatastore } from '../src/index.js'
import type { MemoryReplica } from './fixtures/stores.js'
import type { Datastore, Pair } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

const installCrasher = fileURLToPath(new URL('./fixtures/install-crasher.js', import.meta.url))

interface BlockHolder {
  get(cid: CID): AsyncIterable<Uint8Array> | Iterable<Uint8Array>
  put(cid: CID, bytes: Uint8Array): unknown
}

/** Copies only a snapshot's blocks (root and chunks) between blockstores */
async function copySnapshot (from: BlockHolder, to: BlockHolder, cid: CID): Promise<void> {
  const bytes = await readBlock(from, cid)
  const root = decodeRoot(cid, bytes)
  for (const chunk of [...root.elementChunks, ...root.tombstoneChunks, ...root.nodeChunks]) {
    await to.put(chunk, await readBlock(from, chunk))
  }
  await to.put(cid, bytes)
}

/** Every entry of a datastore, as sorted "key=hex" strings */
async function dump (datastore: Datastore): Promise<string[]> {
  const out: string[] = []
  for await (const { key, value } of datastore.query({}) as AsyncIterable<Pair>) {
    out.push(`${key.toString()}=${Buffer.from(value).toString('hex')}`)
  }
  return out.sort()
}

const headsOf = (store: CRDTDatastore): string[] => store.heads().map(h => `${h.dagName}|${h.cid.toString()}|${h.height}`).sort()

/**
 * A replica over memory whose blockstore can hold back the `nth` read of
 * one block: `reached` resolves when that read starts, `release()` lets it
 * go on
 */
class HoldingBlockstore extends MemoryBlockstore {
  private hold?: { cid: string, nth: number, reads: number, reached(): void, released: Promise<void> }

  holdRead (cid: CID, nth: number): { reached: Promise<void>, release(): void } {
    let reached = (): void => {}
    let release = (): void => {}
    const atHold = new Promise<void>(resolve => { reached = resolve })
    this.hold = { cid: cid.toString(), nth, reads: 0, reached, released: new Promise(resolve => { release = resolve }) }
    return { reached: atHold, release }
  }

  override async * get (cid: CID, options?: AbortOptions): AsyncGenerator<Uint8Array> {
    const hold = this.hold
    if (hold != null && cid.toString() === hold.cid && ++hold.reads === hold.nth) {
      hold.reached()
      await hold.released
    }
    yield * super.get(cid, options)
  }
}

async function holdingReplica (): Promise<{ store: CRDTDatastore, blockstore: HoldingBlockstore }> {
  const blockstore = new HoldingBlockstore()
  return { store: await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore }), blockstore }
}

/** One write of a generated history: a put, or a delete when `value` is absent */
interface HistoryOp { key: string, value?: string }

/**
 * Plays a generated history: one new replica per writer (pushed on
 * `replicas`), each committing its batches in order; with `crossSync`, a
 * writer first syncs from the first writer before its last batch
 */
async function writeHistory (writers: HistoryOp[][][], crossSync: boolean, replicas: MemoryReplica[]): Promise<void> {
  for (const batches of writers) {
    const w = await memoryReplica()
    replicas.push(w)
    for (const [i, ops] of batches.entries()) {
      if (crossSync && i === batches.length - 1 && replicas.length > 1) await syncReplica(replicas[0], w)
      const batch = w.store.batch()
      for (const op of ops) {
        if (op.value == null) batch.delete(new Key(op.key))
        else batch.put(new Key(op.key), enc(op.value))
      }
      await batch.commit()
    }
  }
}

describe('snapshots', function () {
  this.timeout(60_000)

  it('snapshots an empty store deterministically and installs it as a no-op', async () => {
    const a = await memoryReplica()
    const b = await memoryReplica()
    try {
      const cid = await a.store.snapshot()
      expect((await b.store.snapshot()).toString()).to.equal(cid.toString())
      const { root, elements, tombstones } = await readSnapshot(a.blockstore, cid)
      expect(root.version).to.equal(SNAPSHOT_VERSION)
      expect(root.heads).to.have.length(0)
      expect(root.elementChunks).to.have.length(0)
      expect(elements).to.have.length(0)
      expect(tombstones).to.have.length(0)

      const c = await memoryReplica()
      await copySnapshot(a.blockstore, c.blockstore, cid)
      const result = await c.store.installSnapshot(cid)
      expect(result.newHeads).to.equal(0)
      expect(c.store.heads()).to.have.length(0)
      expect(await stateOf(c.store)).to.deep.equal([])
      await c.store.stop()
    } finally {
      await a.store.stop()
      await b.store.stop()
    }
  })

  it('gives the same CID on replicas that merged the same nodes in different orders, and a fresh replica installing it ends equal', async () => {
    const keyArb = fc.string({ unit: fc.constantFrom('a', 'b', 'ü', 'ÿ', '日', '😀'), minLength: 1, maxLength: 3 }).map(s => '/' + s)
    const opArb = fc.record({ key: keyArb, value: fc.option(fc.constantFrom('x', 'y', 'zz', 'ü'), { nil: undefined, freq: 3 }) })
    const historyArb = fc.record({
      writers: fc.array(fc.array(fc.array(opArb, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 4 }), { minLength: 2, maxLength: 3 }),
      // a writer sees the others' work before its last batch when set
      crossSync: fc.boolean()
    })
    await fc.assert(fc.asyncProperty(historyArb, async ({ writers, crossSync }) => {
      const replicas: MemoryReplica[] = []
      try {
        await writeHistory(writers, crossSync, replicas)
        const a = await memoryReplica()
        const b = await memoryReplica()
        replicas.push(a, b)
        const writerCount = writers.length
        for (let i = 0; i < writerCount; i++) await syncReplica(replicas[i], a)
        for (let i = writerCount - 1; i >= 0; i--) await syncReplica(replicas[i], b)
        expect(await stateOf(a.store)).to.deep.equal(await stateOf(b.store))

        const cidA = await a.store.snapshot({ chunkBytes: 64 })
        const cidB = await b.store.snapshot({ chunkBytes: 64 })
        expect(cidB.toString()).to.equal(cidA.toString())

        const c = await memoryReplica()
        replicas.push(c)
        await copySnapshot(a.blockstore, c.blockstore, cidA)
        await c.store.installSnapshot(cidA)
        expect(await stateOf(c.store)).to.deep.equal(await stateOf(a.store))
        expect(headsOf(c.store)).to.deep.equal(headsOf(a.store))
        // and c's own snapshot of that state is the same snapshot
        expect((await c.store.snapshot({ chunkBytes: 64 })).toString()).to.equal(cidA.toString())
      } finally {
        for (const r of replicas) await r.store.stop()
      }
    }), { numRuns: 25 })
  })

  it('a writer that installs another replica\'s snapshot, then syncs everything, ends like a replica with the whole history that passed the same snapshot (fast-check)', async () => {
    const keyArb = fc.string({ unit: fc.constantFrom('a', 'ü', '日', '😀'), minLength: 1, maxLength: 2 }).map(s => '/' + s)
    const opArb = fc.record({ key: keyArb, value: fc.option(fc.constantFrom('x', 'y', 'zz'), { nil: undefined, freq: 2 }) })
    const historyArb = fc.record({
      writers: fc.array(fc.array(fc.array(opArb, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 3 }), { minLength: 2, maxLength: 3 }),
      crossSync: fc.boolean()
    })
    await fc.assert(fc.asyncProperty(historyArb, async ({ writers, crossSync }) => {
      const replicas: MemoryReplica[] = []
      try {
        await writeHistory(writers, crossSync, replicas)
        const n = writers.length
        const a = await memoryReplica()
        const reference = await memoryReplica()
        replicas.push(a, reference)
        for (let i = 0; i < n - 1; i++) await syncReplica(replicas[i], a)
        for (let i = 0; i < n; i++) await syncReplica(replicas[i], reference)
        const cid = await a.store.snapshot({ chunkBytes: 64 })
        // the last writer has its own history; it installs a's snapshot, then gets everything
        const b = replicas[n - 1]
        await copySnapshot(a.blockstore, b.blockstore, cid)
        // the DAG blocks a network would let b fetch from a (install's walk below the covered heads needs them)
        for await (const { cid: c, bytes } of a.blockstore.getAll()) {
          if (!(await b.blockstore.has(c))) for await (const chunk of bytes) await b.blockstore.put(c, chunk)
        }
        await b.store.installSnapshot(cid)
        for (let i = 0; i < n - 1; i++) await syncReplica(replicas[i], b)
        // the reference, with the whole history, passes the snapshot too: its removal is part of
        // the state (a value it overwrote stays gone after a delete that missed it, see README)
        const referenceHeads = headsOf(reference.store)
        await copySnapshot(a.blockstore, reference.blockstore, cid)
        await reference.store.installSnapshot(cid)
        // which changes no heads there: every covered head is merged, and a concurrent head stays
        expect(headsOf(reference.store)).to.deep.equal(referenceHeads)
        expect(await stateOf(b.store)).to.deep.equal(await stateOf(reference.store))
        // a node below the covered heads that b held before, or that arrives later (from a
        // stale replica, or an identical node), is found below them (src/snapshot/cover.ts)
        // and does not become an extra head: b's heads are the reference's
        expect(headsOf(b.store)).to.deep.equal(headsOf(reference.store))
      } finally {
        for (const r of replicas) await r.store.stop()
      }
    }), {
      numRuns: 25,
      examples: [[
        // a random run found it when the reference used no snapshot: the snapshot removes x
        // (overwritten by zz at the same priority), and the last writer's concurrent delete of zz
        // missed x; with the whole history x showed again, after the snapshot it never does
        { writers: [[[{ key: '/日', value: 'zz' }]], [[{ key: '/日', value: 'x' }], [{ key: '/a', value: undefined }]], [[{ key: '/日', value: undefined }, { key: '/a', value: undefined }]]], crossSync: true }
      ], [
        // regression (a random run found it): the last writer's own head only deletes what a
        // covered node deleted too, and links to a node the snapshot names (the first writer wrote
        // the same first node); the install settled that concurrent head as covered, so b ended
        // with one head where the reference has two
        { writers: [[[{ key: '/ü', value: 'y' }], [{ key: '/ü', value: undefined }, { key: '/a', value: 'x' }]], [[{ key: '/a', value: undefined }]], [[{ key: '/ü', value: 'y' }, { key: '/a', value: undefined }], [{ key: '/ü', value: undefined }, { key: '/a', value: undefined }]]], crossSync: false }
      ]]
    })
  })

  it('a concurrent head that only deletes what a covered node deleted too, received after an install, stays a head (regression: the snapshot records settled it as covered, although no covered head is above it)', async () => {
    const a = await memoryReplica()
    const c = await memoryReplica()
    const b = await memoryReplica()
    const reference = await memoryReplica()
    try {
      await a.store.put(new Key('/ü'), enc('y'))
      await syncReplica(a, c)
      // both delete the first node's element: a also writes, c's node only deletes
      const batch = a.store.batch()
      batch.delete(new Key('/ü'))
      batch.put(new Key('/a'), enc('x'))
      await batch.commit()
      await c.store.delete(new Key('/ü'))
      await syncReplica(a, reference)
      await syncReplica(c, reference)
      expect(reference.store.heads()).to.have.length(2)
      const cid = await a.store.snapshot()
      await copySnapshot(a.blockstore, b.blockstore, cid)
      await b.store.installSnapshot(cid)
      await syncReplica(c, b)
      expect(headsOf(b.store)).to.deep.equal(headsOf(reference.store))
      expect(await stateOf(b.store)).to.deep.equal(await stateOf(reference.store))
    } finally {
      for (const r of [a, b, c, reference]) await r.store.stop()
    }
  })

  it('lets a fresh LevelDB replica join from a snapshot, then sync only the DAG above it, and keeps it across a restart', async () => {
    const dirA = await tempDir('snap-a')
    const dirC = await tempDir('snap-c')
    const a = await levelReplica(dirA.path)
    let c = await levelReplica(dirC.path)
    try {
      for (let i = 0; i < 20; i++) await a.store.put(new Key(`/k/${i}`), enc(`v${i}`))
      await a.store.put(new Key('/日本/😀'), enc('unicode'))
      await a.store.delete(new Key('/k/3'))
      await a.store.put(new Key('/k/4'), enc('v4b'))
      const cid = await a.store.snapshot({ chunkBytes: 128 })
      const { root } = await readSnapshot(a.blockstore, cid)
      expect(root.elementChunks.length).to.be.greaterThan(1)

      await copySnapshot(a.blockstore, c.blockstore, cid)
      const result = await c.store.installSnapshot(cid)
      expect(result.newHeads).to.equal(1)
      expect(await stateOf(c.store)).to.deep.equal(await stateOf(a.store))
      expect(headsOf(c.store)).to.deep.equal(headsOf(a.store))
      expect(await c.store.has(new Key('/k/3'))).to.equal(false)
      expect(dec(await c.store.get(new Key('/日本/😀')))).to.equal('unicode')

      // a write on top: only its block reaches c, and c merges it
      await a.store.put(new Key('/after'), enc('1'))
      const [head] = a.store.heads()
      await c.blockstore.put(head.cid, await readBlock(a.blockstore, head.cid))
      await c.store.receive(encodeBroadcast([{ cid: head.cid, dagName: '' }]))
      expect(dec(await c.store.get(new Key('/after')))).to.equal('1')
      expect(await c.store.pendingBranches()).to.have.length(0)
      expect(headsOf(c.store)).to.deep.equal(headsOf(a.store))

      await c.close()
      c = await levelReplica(dirC.path)
      expect(await stateOf(c.store)).to.deep.equal(await stateOf(a.store))
      expect(headsOf(c.store)).to.deep.equal(headsOf(a.store))
    } finally {
      await a.close()
      await c.close()
      await dirA.remove()
      await dirC.remove()
    }
  })

  it('a stale replica announcing a head below the covered heads after a fresh replica installed the snapshot adds no head (regression: it became an extra head)', async () => {
    const a = await memoryReplica()
    const stale = await memoryReplica()
    const b = await memoryReplica()
    try {
      await a.store.put(new Key('/k'), enc('1'))
      await syncReplica(a, stale)
      await a.store.put(new Key('/k'), enc('2'))
      await a.store.delete(new Key('/k'))
      await a.store.put(new Key('/j'), enc('3'))
      const cid = await a.store.snapshot()
      await copySnapshot(a.blockstore, b.blockstore, cid)
      await b.store.installSnapshot(cid)
      const oldHead = stale.store.heads()[0].cid
      // a covered node (the snapshot lists it): merged as far as b is concerned, before any block of it arrives
      expect(await b.store.hasMerged(oldHead)).to.equal(true)
      // b can fetch the blocks below the covered heads (here: copied, over a network: from peers)
      await syncReplica(a, b)
      await syncReplica(stale, b)
      expect(headsOf(b.store)).to.deep.equal(headsOf(a.store))
      expect(await b.store.hasMerged(oldHead)).to.equal(true)
      expect(await b.store.has(new Key('/k'))).to.equal(false)
      expect(await stateOf(b.store)).to.deep.equal(await stateOf(a.store))
    } finally {
      await a.store.stop()
      await stale.store.stop()
      await b.store.stop()
    }
  })

  it('a covered head that a walk meets while its snapshot is being installed, after the install merged its elements, ends a head (regression: the walk marked it merged by the snapshot without making it a head, the install then found it processed and skipped it, and the replica lost that head for good)', async () => {
    const a = await memoryReplica()
    // b's blockstore holds back the install's second read of the snapshot's node chunk (the
    // install reads it after merging the element chunks, before making the covered heads heads)
    const b = await holdingReplica()
    try {
      // b has installed a snapshot before (so it asks the set whether a node is merged by one)
      await a.store.put(new Key('/k'), enc('1'))
      const first = await a.store.snapshot()
      await copySnapshot(a.blockstore, b.blockstore, first)
      await b.store.installSnapshot(first)
      await a.store.put(new Key('/k'), enc('2'))
      const top = a.store.heads()[0]
      const cid = await a.store.snapshot()
      await copySnapshot(a.blockstore, b.blockstore, cid)
      await b.blockstore.put(top.cid, await readBlock(a.blockstore, top.cid))
      const root = decodeRoot(cid, await readBlock(a.blockstore, cid))
      expect(root.heads.map(h => h.cid.toString())).to.deep.equal([top.cid.toString()])
      const { reached, release } = b.blockstore.holdRead(root.nodeChunks[0], 2)
      const install = b.store.installSnapshot(cid)
      await reached
      // the covered head arrives while the install holds: a walk meets it with its element merged
      await b.store.receive(encodeBroadcast([{ cid: top.cid, dagName: '' }]))
      await waitFor(async () => b.store.hasMerged(top.cid), 5000, 'the walk to settle the covered head')
      release()
      await install
      expect(headsOf(b.store)).to.deep.equal(headsOf(a.store))
      expect(await stateOf(b.store)).to.deep.equal(await stateOf(a.store))
    } finally {
      await a.store.stop()
      await b.store.stop()
    }
  })

  it('a node whose elements span element chunks, settled by a walk while its snapshot is being installed, keeps every element (regression: the install skipped the later chunks\' elements of a node processed by then)', async () => {
    const a = await memoryReplica()
    const b = await holdingReplica()
    try {
      await a.store.put(new Key('/first'), enc('1'))
      const first = await a.store.snapshot()
      await copySnapshot(a.blockstore, b.blockstore, first)
      await b.store.installSnapshot(first)
      // one node with many keys: with small chunks its elements span several element chunks
      const batch = a.store.batch()
      for (let i = 0; i < 40; i++) batch.put(new Key(`/k${String(i).padStart(2, '0')}`), enc(`value ${i}`))
      await batch.commit()
      const top = a.store.heads()[0]
      const cid = await a.store.snapshot({ chunkBytes: 256 })
      await copySnapshot(a.blockstore, b.blockstore, cid)
      await b.blockstore.put(top.cid, await readBlock(a.blockstore, top.cid))
      const root = decodeRoot(cid, await readBlock(a.blockstore, cid))
      expect(root.elementChunks.length).to.be.greaterThan(2)
      const { reached, release } = b.blockstore.holdRead(root.elementChunks[1], 2)
      const install = b.store.installSnapshot(cid)
      await reached
      await b.store.receive(encodeBroadcast([{ cid: top.cid, dagName: '' }]))
      await waitFor(async () => b.store.hasMerged(top.cid), 5000, 'the walk to settle the node')
      release()
      await install
      expect(await stateOf(b.store)).to.deep.equal(await stateOf(a.store))
      expect(headsOf(b.store)).to.deep.equal(headsOf(a.store))
    } finally {
      await a.store.stop()
      await b.store.stop()
    }
  })

  it('a covered head whose branch a replica gave up below a node it merged (its link was compacted away) does not become a head when the snapshot is installed (regression: giving the branch up forgot that a merged node links to it, and the install made it an extra head)', async () => {
    const a = await memoryReplica()
    const b = await memoryReplica({ maxFetchAttempts: 1, dagSyncerTimeout: 200, repairInterval: 50 })
    try {
      await a.store.put(new Key('/k'), enc('1'))
      await a.store.put(new Key('/k'), enc('2'))
      const covered = a.store.heads()[0]
      // no known replica (no broadcaster): compacts at once, deleting the block of the first node
      const { snapshot } = await a.store.compact()
      await a.store.put(new Key('/j'), enc('3'))
      // b gets the blocks a still has and the newest head: it merges it, then cannot check the
      // covered head's claim (its link is gone) and gives that branch up
      await syncReplica(a, b)
      expect(await b.store.hasMerged(a.store.heads()[0].cid)).to.equal(true)
      await waitFor(async () => (await b.store.givenUpBranches()).some(g => g.cid.equals(covered.cid)), 5000, 'b to give the covered head up')
      await b.store.installSnapshot(snapshot)
      expect(headsOf(b.store)).to.deep.equal(headsOf(a.store))
      expect(await stateOf(b.store)).to.deep.equal(await stateOf(a.store))
    } finally {
      await a.store.stop()
      await b.store.stop()
    }
  })

  it('merges into a replica with history: its newer writes stay, deleted keys stay deleted, and a second install changes nothing', async () => {
    const a = await memoryReplica()
    const b = await memoryReplica()
    try {
      await a.store.put(new Key('/k'), enc('1'))
      await a.store.put(new Key('/d'), enc('1'))
      await a.store.put(new Key('/x'), enc('1'))
      await syncReplica(a, b)
      // b: a newer write and a delete a does not know
      await b.store.put(new Key('/k'), enc('2'))
      await b.store.delete(new Key('/d'))
      // a: a delete and a put b does not know
      await a.store.delete(new Key('/x'))
      await a.store.put(new Key('/y'), enc('1'))
      const cid = await a.store.snapshot()
      const bHeads = headsOf(b.store)

      await copySnapshot(a.blockstore, b.blockstore, cid)
      const first = await b.store.installSnapshot(cid)
      expect(first.newHeads).to.equal(1)
      expect(dec(await b.store.get(new Key('/k')))).to.equal('2')
      expect(await b.store.has(new Key('/d'))).to.equal(false)
      expect(await b.store.has(new Key('/x'))).to.equal(false)
      expect(dec(await b.store.get(new Key('/y')))).to.equal('1')
      expect(headsOf(b.store)).to.include.members(bHeads)
      expect(headsOf(b.store)).to.include.members(headsOf(a.store))

      const before = await dump(b.datastore)
      const second = await b.store.installSnapshot(cid)
      expect(second.newHeads).to.equal(0)
      expect(second.changes).to.equal(0)
      expect(await dump(b.datastore)).to.deep.equal(before)

      // the full history of a, delivered afterwards, brings nothing back
      await syncReplica(a, b)
      expect(await b.store.has(new Key('/x'))).to.equal(false)
      expect(await b.store.has(new Key('/d'))).to.equal(false)
      expect(dec(await b.store.get(new Key('/k')))).to.equal('2')

      // and once a gets b's history, the two agree
      await syncReplica(b, a)
      await syncReplica(a, b)
      expect(await stateOf(a.store)).to.deep.equal(await stateOf(b.store))
    } finally {
      await a.store.stop()
      await b.store.stop()
    }
  })

  it('lists per key only the live elements that are not overwritten and removes the others on every replica that applies it; the snapshot stays the same whoever makes it', async () => {
    const a = await memoryReplica()
    const b = await memoryReplica()
    const d = await memoryReplica()
    try {
      await a.store.put(new Key('/k'), enc('v1'))
      await syncReplica(a, b)
      await a.store.put(new Key('/k'), enc('v2'))
      await a.store.put(new Key('/k'), enc('v3'))
      await a.store.put(new Key('/c'), enc('c1'))
      // b rewrites /k concurrently with v2 and v3 (a lower priority than v3)
      await b.store.put(new Key('/k'), enc('b1'))
      await syncReplica(b, a)
      await syncReplica(a, b)
      await syncReplica(a, d)

      const cid = await a.store.snapshot()
      const { elements, nodes } = await readSnapshot(a.blockstore, cid)
      // v1 and v2 are below v3's node, b1 is concurrent with v3 but beaten by it: only v3 is listed
      expect(elements.filter(e => e.key === '/k').map(e => dec(e.value))).to.deep.equal(['v3'])
      expect(elements.filter(e => e.key === '/c').map(e => dec(e.value))).to.deep.equal(['c1'])
      // every merged node is covered
      expect(nodes).to.have.length(5)
      // the same snapshot on a replica that merged the same nodes the other way round
      expect((await b.store.snapshot()).toString()).to.equal(cid.toString())
      expect(await stateOf(a.store)).to.deep.equal(['/c=c1', '/k=v3'])

      // the removal on a replica with history: the overwritten elements go, the visible state stays
      const live = async (r: MemoryReplica): Promise<number> => (await dump(r.datastore)).filter(e => e.startsWith('/crdt/s/s/k/')).length
      expect(await live(d)).to.equal(4)
      await copySnapshot(a.blockstore, d.blockstore, cid)
      await d.store.installSnapshot(cid)
      expect(await live(d)).to.equal(1)
      expect(await stateOf(d.store)).to.deep.equal(['/c=c1', '/k=v3'])
      // a delete made there still names the removed elements (a replica that has not applied the snapshot holds them)
      await d.store.delete(new Key('/k'))
      const fresh = await memoryReplica()
      try {
        await syncReplica(d, fresh)
        expect(await stateOf(fresh.store)).to.deep.equal(['/c=c1'])
      } finally {
        await fresh.store.stop()
      }
    } finally {
      for (const r of [a, b, d]) await r.store.stop()
    }
  })

  it('a delete concurrent with a snapshot that missed an overwritten element removes the key on every replica once each has applied the snapshot (the overwritten value never comes back)', async () => {
    const a = await memoryReplica()
    const b = await memoryReplica()
    const c = await memoryReplica()
    const reference = await memoryReplica()
    try {
      // a writes "old"; b, which never sees it, writes "new" with a higher priority
      await a.store.put(new Key('/k'), enc('old'))
      await b.store.put(new Key('/x'), enc('1'))
      await b.store.put(new Key('/k'), enc('new'))
      await syncReplica(a, c)
      await syncReplica(b, c)
      expect(dec(await c.store.get(new Key('/k')))).to.equal('new')
      const cid = await c.store.snapshot()
      // b deletes /k knowing only "new": concurrent with the snapshot, its delete misses "old"
      await b.store.delete(new Key('/k'))
      for (const from of [a, b, c]) for (const to of [a, b, c, reference]) if (from !== to) await syncReplica(from, to)
      // c applied its snapshot: "old" was removed there, so the key is gone
      expect(await c.store.has(new Key('/k'))).to.equal(false)
      // a replica that has not applied it yet shows "old" (the add-wins rule without the removal)
      expect(dec(await reference.store.get(new Key('/k')))).to.equal('old')
      // each applies it (passes it), before or after the delete arrived: all agree
      for (const r of [a, b, reference]) {
        await copySnapshot(c.blockstore, r.blockstore, cid)
        await r.store.installSnapshot(cid)
      }
      for (const r of [a, b, c, reference]) expect(await stateOf(r.store)).to.deep.equal(['/x=1'])
    } finally {
      for (const r of [a, b, c, reference]) await r.store.stop()
    }
  })

  it('a replica joining from a snapshot deletes a key on replicas with the whole history too: they apply the snapshot\'s removal, before or after the delete arrives (regression: the older value came back there)', async () => {
    const a = await memoryReplica()
    const early = await memoryReplica()
    const late = await memoryReplica()
    const j = await memoryReplica()
    try {
      for (const v of ['v1', 'v2', 'v3']) await a.store.put(new Key('/k'), enc(v))
      await a.store.put(new Key('/c'), enc('c1'))
      await syncReplica(a, early)
      await syncReplica(a, late)
      const cid = await a.store.snapshot()
      const { elements } = await readSnapshot(a.blockstore, cid)
      expect(elements.filter(e => e.key === '/k').map(e => dec(e.value))).to.deep.equal(['v3'])
      // early passes the snapshot before the delete
      await copySnapshot(a.blockstore, early.blockstore, cid)
      await early.store.installSnapshot(cid)
      await copySnapshot(a.blockstore, j.blockstore, cid)
      await j.store.installSnapshot(cid)
      await j.store.delete(new Key('/k'))
      await syncReplica(j, early)
      await syncReplica(j, late)
      expect(await stateOf(early.store)).to.deep.equal(['/c=c1'])
      // late passes it after the delete: v2 showed until then
      expect(dec(await late.store.get(new Key('/k')))).to.equal('v2')
      await copySnapshot(a.blockstore, late.blockstore, cid)
      await late.store.installSnapshot(cid)
      for (const r of [early, late, j]) expect(await stateOf(r.store)).to.deep.equal(['/c=c1'])
      await syncReplica(j, a)
      expect(await stateOf(a.store)).to.deep.equal(['/c=c1'])
    } finally {
      for (const r of [a, early, late, j]) await r.store.stop()
    }
  })

  it('a replica back from away installs a snapshot made without it: its overwritten elements of covered nodes are removed, its own write the snapshot does not cover stays, and it ends equal to the others', async () => {
    const a = await memoryReplica()
    const d = await memoryReplica()
    try {
      await a.store.put(new Key('/k'), enc('v1'))
      await a.store.put(new Key('/j'), enc('j1'))
      await syncReplica(a, d)
      // d is away: it writes /k itself (a node nobody else has); a overwrites /k twice and /j once
      await d.store.put(new Key('/k'), enc('mine'))
      await a.store.put(new Key('/k'), enc('v2'))
      await a.store.put(new Key('/k'), enc('v3'))
      await a.store.put(new Key('/j'), enc('j2'))
      // a compacts without d (not a known replica here) and forgets v1, v2 and j1, then deletes both keys
      const { snapshot } = await a.store.compact()
      await a.store.delete(new Key('/k'))
      await a.store.delete(new Key('/j'))
      // d comes back: it installs the snapshot (a replica whose walk into compacted history failed does)
      await copySnapshot(a.blockstore, d.blockstore, snapshot)
      await d.store.installSnapshot(snapshot)
      const { nodes } = await readSnapshot(a.blockstore, snapshot)
      expect(nodes).to.have.length(5)
      // v1 and j1 (covered nodes d held) are removed there; "mine" (not covered) is not, though beaten by v3
      const removed = (await dump(d.datastore)).filter(e => e.startsWith('/crdt/s/r/'))
      expect(removed).to.have.length(2)
      expect(dec(await d.store.get(new Key('/k')))).to.equal('v3')
      expect(dec(await d.store.get(new Key('/j')))).to.equal('j2')
      // the deletes reach d (they name only v3 and j2), d's write reaches a: j1 stays gone, and the
      // write the delete never saw wins on both
      await syncReplica(a, d)
      await syncReplica(d, a)
      expect(await stateOf(d.store)).to.deep.equal(['/k=mine'])
      expect(await stateOf(a.store)).to.deep.equal(['/k=mine'])
    } finally {
      await a.store.stop()
      await d.store.stop()
    }
  })

  it('a snapshot made by a replica that had not applied an earlier one never brings back what that one removed, is not announced by a replica that applied it, and every replica converges once each applied both', async () => {
    const a = await memoryReplica()
    const b = await memoryReplica()
    const j = await memoryReplica()
    try {
      await a.store.put(new Key('/k'), enc('v1'))
      await a.store.put(new Key('/k'), enc('v2'))
      await syncReplica(a, b)
      const s1 = await a.store.snapshot()
      // j joins from s1 (without v1) and deletes /k: its delete names v2 only
      await copySnapshot(a.blockstore, j.blockstore, s1)
      await j.store.installSnapshot(s1)
      await j.store.delete(new Key('/k'))
      // b never applied s1: v1 shows there, and b's own snapshot lists it
      await syncReplica(j, b)
      expect(await stateOf(b.store)).to.deep.equal(['/k=v1'])
      const s2 = await b.store.snapshot()
      expect((await readSnapshot(b.blockstore, s2)).elements.map(e => dec(e.value))).to.deep.equal(['v1'])
      // a passes s2 (it merged everything s2 covers): v1 stays removed, and a keeps announcing s1
      await syncReplica(j, a)
      await copySnapshot(b.blockstore, a.blockstore, s2)
      await a.store.installSnapshot(s2)
      expect(await stateOf(a.store)).to.deep.equal([])
      expect(a.store.stats().history.snapshot?.toString()).to.equal(s1.toString())
      // b applies s1: all agree
      await copySnapshot(a.blockstore, b.blockstore, s1)
      await b.store.installSnapshot(s1)
      for (const r of [a, b, j]) expect(await stateOf(r.store)).to.deep.equal([])
    } finally {
      for (const r of [a, b, j]) await r.store.stop()
    }
  })

  it('a kill between two chunk batches of an install leaves no half state after reopening: start() finishes it', async () => {
    const a = await memoryReplica()
    const dir = await tempDir('install-kill')
    try {
      const batch = a.store.batch()
      for (let i = 0; i < 40; i++) batch.put(new Key(`/k/${i}`), enc(`v${i}`))
      batch.delete(new Key('/k/0'))
      await batch.commit()
      await a.store.delete(new Key('/k/1'))
      const cid = await a.store.snapshot({ chunkBytes: 64 })
      const root = decodeRoot(cid, await readBlock(a.blockstore, cid))
      const chunks = root.elementChunks.length + root.tombstoneChunks.length + root.nodeChunks.length
      expect(root.elementChunks.length).to.be.greaterThan(4)

      let r = await levelReplica(dir.path)
      await copySnapshot(a.blockstore, r.blockstore, cid)
      await r.close()
      // the first pass reads the root and every chunk; the second pass is killed before its fourth chunk
      const child = spawn(process.execPath, [installCrasher, dir.path, cid.toString(), String(1 + chunks + 3)], { stdio: ['ignore', 'pipe', 'inherit'] })
      let out = ''
      child.stdout.on('data', (d: Buffer) => { out += d.toString() })
      const signal = await new Promise(resolve => child.on('exit', (_code, sig) => { resolve(sig) }))
      expect(signal).to.equal('SIGKILL')
      expect(out).to.not.include('installed')

      // killed half-way: the record is there and part of the elements
      const raw = new LevelDatastore(join(dir.path, 'data'))
      await raw.open()
      const entries = await dump(raw)
      await raw.close()
      expect(entries.filter(e => e.startsWith('/crdt/z/i/'))).to.have.length(1)
      const merged = entries.filter(e => e.startsWith('/crdt/s/s/')).length
      expect(merged).to.be.greaterThan(0).and.lessThan(root.elementCount)

      r = await levelReplica(dir.path, { repairInterval: 0 })
      try {
        expect(await stateOf(r.store)).to.deep.equal(await stateOf(a.store))
        expect(headsOf(r.store)).to.deep.equal(headsOf(a.store))
        expect((await dump(r.datastore)).filter(e => e.startsWith('/crdt/z/i/'))).to.deep.equal([])
      } finally {
        await r.close()
      }
    } finally {
      await a.store.stop()
      await dir.remove()
    }
  })

  it('refuses a corrupted chunk with InvalidSnapshotError, and a missing one with BlockFetchError, changing nothing', async () => {
    const a = await memoryReplica()
    const c = await memoryReplica()
    try {
      for (let i = 0; i < 10; i++) await a.store.put(new Key(`/k${i}`), enc(`value ${i}`))
      const cid = await a.store.snapshot({ chunkBytes: 64 })
      await copySnapshot(a.blockstore, c.blockstore, cid)
      const { root } = await readSnapshot(a.blockstore, cid)
      const victim = root.elementChunks[root.elementChunks.length - 1]
      const bytes = await readBlock(a.blockstore, victim)
      const bad = bytes.slice()
      bad[bad.length - 1] ^= 0x01
      await c.blockstore.put(victim, bad)

      const before = await dump(c.datastore)
      await expect(c.store.installSnapshot(cid)).to.eventually.be.rejected
        .with.property('name', 'InvalidSnapshotError')
      await expect(c.store.installSnapshot(cid)).to.eventually.be.rejectedWith(/does not match its hash/)
      expect(await dump(c.datastore)).to.deep.equal(before)
      expect(c.store.heads()).to.have.length(0)

      // a chunk nobody has: a named fetch error, and still nothing written
      await c.blockstore.delete(victim)
      await expect(c.store.installSnapshot(cid, { blockTimeout: 1000 })).to.eventually.be.rejected
        .with.property('name', 'BlockFetchError')
      expect(await dump(c.datastore)).to.deep.equal(before)
    } finally {
      await a.store.stop()
      await c.store.stop()
    }
  })

  it('refuses well-hashed snapshots whose records are out of order, miscounted or out of range, changing nothing', async () => {
    const c = await memoryReplica()
    try {
      await c.store.put(new Key('/mine'), enc('1'))
      const head = c.store.heads()[0]
      const id = '/' + 'CIQ' + 'A'.repeat(55)
      // a real block key: the multihash of the local head
      const realId = (await import('../src/codec/block-key.js')).blockKey(head.cid)
      const snapshotId = await snapshotIdOf([])
      const makeRoot = async (elements: unknown[][], tombstones: unknown[][], counts?: { ne: number, nt: number }): Promise<CID> => {
        const echunk = await encodeBlock({ e: elements })
        const tchunk = await encodeBlock({ t: tombstones })
        await c.blockstore.put(echunk.cid, echunk.bytes)
        await c.blockstore.put(tchunk.cid, tchunk.bytes)
        const root = await encodeBlock(encodeRoot({
          version: SNAPSHOT_VERSION,
          snapshotId,
          heads: [],
          elementCount: counts?.ne ?? elements.length,
          tombstoneCount: counts?.nt ?? tombstones.length,
          nodeCount: 0,
          elementChunks: [echunk.cid],
          tombstoneChunks: [tchunk.cid],
          nodeChunks: []
        }))
        await c.blockstore.put(root.cid, root.bytes)
        return root.cid
      }
      const cases: Array<[string, Promise<CID>, RegExp]> = [
        ['out of order', makeRoot([['/b', realId, 1, enc('1')], ['/a', realId, 1, enc('2')]], [['/a', realId]]), /ascending/],
        ['miscounted', makeRoot([['/a', realId, 1, enc('1')]], [['/a', realId]], { ne: 2, nt: 1 }), /records 2 elements/],
        ['priority out of range', makeRoot([['/a', realId, -1, enc('1')]], [['/a', realId]]), /priority out of range/],
        ['unclean key', makeRoot([['/a//b', realId, 1, enc('1')]], [['/a', realId]]), /clean datastore key/],
        ['bad id', makeRoot([['/a', id.slice(0, 10) + '/x', 1, enc('1')]], [['/a', realId]]), /not a block key/]
      ]
      const before = await dump(c.datastore)
      for (const [what, root, message] of cases) {
        const err = await c.store.installSnapshot(await root).then(() => undefined, (e: Error) => e)
        expect(err, what).to.have.property('name', 'InvalidSnapshotError')
        expect(err?.message, what).to.match(message)
      }
      // a head under a DAG name no replica would store
      const badHead = await encodeBlock(encodeRoot({ version: SNAPSHOT_VERSION, snapshotId, heads: [{ dagName: '/x//', cid: head.cid, height: 1 }], elementCount: 0, tombstoneCount: 0, nodeCount: 0, elementChunks: [], tombstoneChunks: [], nodeChunks: [] }))
      await c.blockstore.put(badHead.cid, badHead.bytes)
      await expect(c.store.installSnapshot(badHead.cid)).to.eventually.be.rejectedWith(/not canonical/)
      // a root that is not a snapshot at all
      const junk = await encodeBlock({ hello: 'world' })
      await c.blockstore.put(junk.cid, junk.bytes)
      await expect(c.store.installSnapshot(junk.cid)).to.eventually.be.rejected.with.property('name', 'InvalidSnapshotError')
      // a dag-pb CID is no snapshot root
      await expect(c.store.installSnapshot(head.cid)).to.eventually.be.rejected.with.property('name', 'InvalidSnapshotError')
      expect(await dump(c.datastore)).to.deep.equal(before)
      expect(dec(await c.store.get(new Key('/mine')))).to.equal('1')
      // the chunk encoders round-trip through the checked decoders
      expect(encodeElementChunk([])).to.deep.equal({ e: [] })
      expect(encodeTombstoneChunk([])).to.deep.equal({ t: [] })
    } finally {
      await c.store.stop()
    }
  })

  it('installs a snapshot whose blocks a fresh Helia replica fetches over bitswap (memory transport)', async () => {
    const nodes = await Promise.all([0, 1].map(async i => createReplicaNode({ listen: [`/memory/snap-${i}-${Math.random().toString(36).slice(2)}`] })))
    // different topics: no DAG reaches c by gossip, only the snapshot's blocks by bitswap
    const a = await createHeliaCRDT(nodes[0], { topic: 'snapshot-a', dagSyncerTimeout: 10_000 })
    const c = await createHeliaCRDT(nodes[1], { topic: 'snapshot-c', dagSyncerTimeout: 10_000 })
    try {
      for (let i = 0; i < 12; i++) await a.put(new Key(`/n/${i}`), enc(`v${i}`))
      await a.delete(new Key('/n/0'))
      const cid = await a.snapshot({ chunkBytes: 64 })
      await nodes[1].libp2p.dial(nodes[0].libp2p.getMultiaddrs()[0])
      await waitFor(() => nodes[1].libp2p.getConnections().length > 0, 10_000, 'a connection')
      expect(await nodes[1].blockstore.has(cid)).to.equal(false)
      const signal = AbortSignal.timeout(30_000)
      await c.installSnapshot(cid, { signal })
      expect(await stateOf(c)).to.deep.equal(await stateOf(a))
      expect(headsOf(c)).to.deep.equal(headsOf(a))
    } finally {
      await c.stop()
      await a.stop()
      await Promise.all(nodes.map(async n => n.stop()))
    }
  })

  it('refuses to snapshot while a walk is unfinished', async () => {
    const a = await memoryReplica({ dagSyncerTimeout: 1000 })
    try {
      await a.store.put(new Key('/a'), enc('1'))
      // a node whose link is nowhere to be found: it waits for it (the link's claim bounds its priority) and stays pending
      const missing = await missingCid('snapshot')
      const top = await encodeNode({ elements: [{ key: '/above', id: '', value: enc('here') }], tombstones: [], priority: 2, dagName: '' }, [missing])
      await a.blockstore.put(top.cid, top.bytes)
      await a.store.receive(encodeBroadcast([{ cid: top.cid, dagName: '' }]))
      expect((await a.store.pendingBranches()).map(String)).to.deep.equal([top.cid.toString()])
      await expect(a.store.snapshot()).to.eventually.be.rejected.with.property('name', 'SnapshotNotReadyError')
    } finally {
      await a.store.stop()
    }
  })
})

describe('snapshots: local reads', function () {
  it('a local read goes through getLocal() when the blockstore has it, never through a get() that asks peers (regression: the block-sync blockstore ignores offline, so compaction\'s and the cover checks\' local reads of blocks compacted away everywhere waited on the network until aborted)', async () => {
    const block = await encodeBlock({ e: [['/a', '/x', 1, enc('v')]] })
    const absent = await missingCid('local-read')
    let asked = 0
    const getter = {
      // asks peers whatever `offline` says, and nobody answers
      async * get (_cid: CID, options?: { signal?: AbortSignal }): AsyncGenerator<Uint8Array> {
        asked++
        await new Promise((resolve, reject) => { options?.signal?.addEventListener('abort', () => { reject(options.signal?.reason) }, { once: true }) })
        yield new Uint8Array(0)
      },
      async getLocal (cid: CID): Promise<{ bytes: Uint8Array } | undefined> {
        return cid.equals(block.cid) ? { bytes: block.bytes } : undefined
      }
    }
    const signal = AbortSignal.timeout(2000)
    expect(await readLocalBlock(getter, absent, { signal })).to.equal(undefined)
    expect(await readLocalBlock(getter, block.cid, { signal })).to.deep.equal(block.bytes)
    expect(asked).to.equal(0)
  })

  it('an installed snapshot\'s blocks are stored here though the DAG syncer keeps only delta nodes, so this replica can serve it (regression: they were fetched, not stored: fetched again by each pass, and a replica that passed the snapshot could not serve it)', async () => {
    const a = await memoryReplica()
    // fetches from a what it lacks and, as the Helia DAG syncer does with blocks that are not delta nodes, does not store it
    const local = new MemoryBlockstore()
    let fetched = 0
    const blockstore = {
      has: async (cid: CID) => local.has(cid),
      put: async (cid: CID, bytes: Uint8Array) => local.put(cid, bytes),
      async * get (cid: CID, options?: AbortOptions & { offline?: boolean }): AsyncGenerator<Uint8Array> {
        if (await local.has(cid) || options?.offline === true) {
          yield * local.get(cid, options)
          return
        }
        fetched++
        yield * a.blockstore.get(cid)
      }
    }
    const b = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore })
    try {
      for (let i = 0; i < 6; i++) await a.store.put(new Key(`/s/${i}`), enc(`v${i}`))
      const cid = await a.store.snapshot({ chunkBytes: 64 })
      const root = decodeRoot(cid, await readBlock(a.blockstore, cid))
      const blocks = [cid, ...root.elementChunks, ...root.tombstoneChunks, ...root.nodeChunks]
      await b.installSnapshot(cid)
      expect(await stateOf(b)).to.deep.equal(await stateOf(a.store))
      for (const block of blocks) expect(await local.has(block), `block ${block}`).to.equal(true)
      // each block crossed the network once
      expect(fetched).to.equal(blocks.length)
    } finally {
      await b.stop()
      await a.store.stop()
    }
  })
})
