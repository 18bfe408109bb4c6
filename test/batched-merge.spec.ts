/**
 * Merging many nodes per datastore batch (issue #15, `Engine.processRun`):
 * a walk merges a fetched node and the nodes below it whose blocks are
 * already local in one batch, bounded by `maxMergeNodes` / `maxMergeBytes`.
 *
 * - A chain merges in a handful of batches, with the same events, in the
 *   same order, as merging one node per batch.
 * - A batch that never lands (the process killed before it) leaves the
 *   store exactly as the batches before it left it: the merged part is a
 *   top part of the chain and the `w/` frontier is the node just below it;
 *   a reopen and a repair end in the state of an uninterrupted merge.
 * - Property: random go-shaped DAGs (a key put twice in one node, non-ASCII
 *   keys, tombstones, several heads, nodes that claim too much priority
 *   anywhere, before or after their links) end in byte-identical datastores
 *   whether merged one node per batch, a few per batch or up to the
 *   default, and whatever order their heads are announced in (the
 *   priority check is a function of the blocks: issue #20 item 2).
 */

import { join } from 'node:path'
import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { MemoryDatastore } from 'datastore-core'
import { LevelDatastore } from 'datastore-level'
import fc from 'fast-check'
import { Key } from 'interface-datastore'
import { blockKey } from '../src/codec/block-key.js'
import { DEFAULT_MAX_MERGE_NODES, createCRDTDatastore, decodeNode, encodeBroadcast } from '../src/index.js'
import { goNode } from './fixtures/go-nodes.js'
import { dec, enc, memoryReplica, readBlock, syncReplica, tempDir } from './fixtures/stores.js'
import type { CRDTDatastore, CRDTDatastoreInit } from '../src/index.js'
import type { GoNode } from './fixtures/go-nodes.js'
import type { Datastore, Pair } from 'interface-datastore'
import type { CID } from 'multiformats/cid'

/** Counts batch commits; the commit numbered `failAt` throws without writing anything (a kill before it landed) */
interface BatchControl {
  commits: number
  failAt?: number
}

function watchBatches (store: Datastore, control: BatchControl): Datastore {
  return new Proxy(store, {
    get (target, prop) {
      if (prop === 'batch') {
        return () => {
          const batch = target.batch()
          return {
            put: (key: Key, value: Uint8Array) => { batch.put(key, value) },
            delete: (key: Key) => { batch.delete(key) },
            commit: async (options?: any) => {
              control.commits++
              if (control.commits === control.failAt) throw new Error('killed before this batch landed')
              await batch.commit(options)
            }
          }
        }
      }
      const value = Reflect.get(target, prop)
      return typeof value === 'function' ? value.bind(target) : value
    }
  })
}

/** Every entry of a datastore as `key=hex(value)`, sorted */
async function dump (store: Datastore): Promise<string[]> {
  const out: string[] = []
  for await (const { key, value } of store.query({}) as AsyncIterable<Pair>) {
    out.push(`${key.toString()}=${Buffer.from(value).toString('hex')}`)
  }
  return out.sort()
}

/** The events a store fires, in order */
function record (store: CRDTDatastore): string[] {
  const events: string[] = []
  store.addEventListener('put', evt => { events.push(`put ${evt.detail.key.toString()}=${dec(evt.detail.value)}`) })
  store.addEventListener('delete', evt => { events.push(`delete ${evt.detail.key.toString()}`) })
  store.addEventListener('processed', evt => { events.push(`node ${evt.detail.cid.toString()}`) })
  return events
}

/** The chain below `head`, head first */
async function chainOf (blockstore: MemoryBlockstore, head: CID): Promise<CID[]> {
  const out: CID[] = []
  let next: CID | undefined = head
  while (next != null) {
    out.push(next)
    next = decodeNode(next, await readBlock(blockstore, next)).links[0]
  }
  return out
}

const CHAIN_KEYS = ['/k', '/ü', '/日本/語', '/😀', '/e\u0301', '/a/b']

/** A writer with a chain of `n` nodes putting and deleting a few keys */
async function chainWriter (n: number): Promise<Awaited<ReturnType<typeof memoryReplica>>> {
  const source = await memoryReplica({ repairInterval: 0 })
  for (let i = 0; i < n; i++) {
    const k = new Key(CHAIN_KEYS[i % CHAIN_KEYS.length])
    if (i % 7 === 6) await source.store.delete(k)
    else await source.store.put(k, enc(`v${i}`))
  }
  return source
}

describe('merging many nodes per datastore batch', function () {
  this.timeout(60_000)

  it('merges a chain in a few batches, firing the events of a merge one node at a time', async () => {
    const source = await chainWriter(300)
    const one = await memoryReplica({ repairInterval: 0, maxMergeNodes: 1 })
    const oneEvents = record(one.store)
    const control: BatchControl = { commits: 0 }
    const datastore = new MemoryDatastore()
    const blockstore = new MemoryBlockstore()
    const many = { store: await createCRDTDatastore({ datastore: watchBatches(datastore, control), blockstore }, { repairInterval: 0 }), datastore, blockstore }
    const manyEvents = record(many.store)
    try {
      await syncReplica(source, one)
      await syncReplica(source, many)
      // 300 nodes at up to DEFAULT_MAX_MERGE_NODES per batch, plus the adoption of the head
      expect(control.commits).to.be.at.most(Math.ceil(300 / DEFAULT_MAX_MERGE_NODES) + 2)
      expect(manyEvents.filter(e => e.startsWith('node ')).length).to.equal(300)
      expect(manyEvents).to.deep.equal(oneEvents)
      expect(await dump(many.datastore)).to.deep.equal(await dump(one.datastore))
      expect(await many.store.pendingBranches()).to.deep.equal([])
    } finally {
      await Promise.all([source.store.stop(), one.store.stop(), many.store.stop()])
    }
  })

  it('keeps runs within maxMergeNodes and maxMergeBytes', async () => {
    const source = await chainWriter(120)
    for (const [init, most] of [[{ maxMergeNodes: 10 }, 10], [{ maxMergeBytes: 1 }, 2]] as Array<[CRDTDatastoreInit, number]>) {
      const datastore = new MemoryDatastore()
      const blockstore = new MemoryBlockstore()
      const store = await createCRDTDatastore({ datastore, blockstore }, { repairInterval: 0, ...init })
      const perBatch: number[] = []
      let count = 0
      // one batch's nodes are reported together, after it committed
      store.addEventListener('processed', () => {
        count++
        queueMicrotask(() => {
          if (count > 0) perBatch.push(count)
          count = 0
        })
      })
      try {
        await syncReplica(source, { store, datastore, blockstore })
        expect(perBatch.reduce((a, b) => a + b, 0)).to.equal(120)
        expect(Math.max(...perBatch), JSON.stringify(init)).to.equal(most)
      } finally {
        await store.stop()
      }
    }
    await source.store.stop()
  })

  it('a batch that never lands leaves a top part of the chain merged and its frontier recorded; a repair after a reopen ends as an uninterrupted merge', async () => {
    const dir = await tempDir('crdt-batched-merge')
    const source = await chainWriter(300)
    const reference = await memoryReplica({ repairInterval: 0, maxMergeNodes: 1 })
    const level = new LevelDatastore(join(dir.path, 'data'))
    await level.open()
    const blockstore = new MemoryBlockstore()
    const control: BatchControl = { commits: 0, failAt: 4 }
    let store: CRDTDatastore | undefined
    try {
      await syncReplica(source, reference)
      const chain = await chainOf(source.blockstore, source.store.heads()[0].cid)
      expect(chain).to.have.length(300)

      store = await createCRDTDatastore({ datastore: watchBatches(level, control), blockstore }, { repairInterval: 0, maxMergeNodes: 50 })
      await syncReplica(source, { store, datastore: new MemoryDatastore(), blockstore })
      expect(control.commits).to.be.at.least(4)
      expect(await store.isDirty()).to.equal(true)
      // what landed is a top part of the chain, in whole batches of 50
      const merged: boolean[] = []
      for (const cid of chain) merged.push(await store.hasMerged(cid))
      const count = merged.indexOf(false)
      expect(count).to.be.greaterThan(0)
      expect(count % 50).to.equal(0)
      expect(merged.slice(count).every(m => !m)).to.equal(true)
      expect((await store.pendingBranches()).map(c => c.toString())).to.deep.equal([chain[count].toString()])
      await store.stop()

      store = await createCRDTDatastore({ datastore: level, blockstore }, { repairInterval: 0, maxMergeNodes: 50 })
      await store.repair()
      expect(await store.isDirty()).to.equal(false)
      expect(await dump(level)).to.deep.equal(await dump(reference.datastore))
    } finally {
      await store?.stop()
      await Promise.all([source.store.stop(), reference.store.stop()])
      await level.close()
      await dir.remove()
    }
  })

  it('a node met again after it was merged (a stale w/ record) is cleared without an event', async () => {
    const source = await chainWriter(5)
    const r = await memoryReplica({ repairInterval: 0 })
    try {
      await syncReplica(source, r)
      const chain = await chainOf(source.blockstore, source.store.heads()[0].cid)
      await r.datastore.put(new Key(`/crdt/w${blockKey(chain[2])}`), Uint8Array.of(0))
      const events = record(r.store)
      await r.store.markDirty()
      await r.store.repair()
      expect(await r.store.pendingBranches()).to.deep.equal([])
      expect(events).to.deep.equal([])
    } finally {
      await Promise.all([source.store.stop(), r.store.stop()])
    }
  })

  describe('property: merges are a function of the blocks, not of batching or arrival order', () => {
    const KEYS = ['/a', '/b', '/c/d', '/ü', '/日本/語', '/😀', '/e\u0301']
    const VALUES = ['x', 'y', '', 'ü', '語', '😀']

    interface NodeSpec {
      links: number[]
      elements: Array<[number, number]>
      tombstones: Array<[number, number]>
      dishonest: boolean
    }

    const nodeSpec = fc.record({
      links: fc.array(fc.nat(), { maxLength: 3 }),
      // few keys, so one node often puts a key twice (as go-ds-crdt batches do)
      elements: fc.array(fc.tuple(fc.nat(KEYS.length - 1), fc.nat(VALUES.length - 1)), { minLength: 1, maxLength: 4 }),
      tombstones: fc.array(fc.tuple(fc.nat(KEYS.length - 1), fc.nat()), { maxLength: 2 }),
      dishonest: fc.nat(5).map(n => n === 0)
    })

    /**
     * Builds the go-shaped nodes; node i links only earlier nodes. A
     * dishonest node claims 3 more than its links allow (2 more without
     * links), wherever it is: above honest nodes, below other dishonest
     * ones, linked by nodes that claim exactly 1 + its claim. Returns the
     * nodes and the heads of the first half and of all.
     */
    async function build (specs: NodeSpec[]): Promise<{ nodes: GoNode[], firstHeads: GoNode[], heads: GoNode[] }> {
      const nodes: GoNode[] = []
      const priorities: number[] = []
      const linked = new Set<number>()
      let firstHeads: GoNode[] = []
      const half = Math.ceil(specs.length / 2)
      for (const [i, spec] of specs.entries()) {
        const links = i === 0 ? [] : [...new Set(spec.links.map(l => l % i))]
        for (const l of links) linked.add(l)
        const honest = 1 + links.reduce((max, l) => Math.max(max, priorities[l]), 0)
        const priority = spec.dishonest ? honest + (links.length > 0 ? 3 : 2) : honest
        priorities.push(priority)
        nodes.push(await goNode({
          elements: spec.elements.map(([k, v]) => ({ key: KEYS[k], value: VALUES[v] })),
          tombstones: i === 0 ? [] : spec.tombstones.map(([k, t]) => ({ key: KEYS[k], id: blockKey(nodes[t % i].cid) })),
          priority,
          links: links.map(l => nodes[l].cid)
        }))
        if (i === half - 1) firstHeads = nodes.filter((_, j) => !linked.has(j))
      }
      return { nodes, firstHeads, heads: nodes.filter((_, j) => !linked.has(j)) }
    }

    /** Merges the broadcasts in the order given (each a list of heads), every block stored beforehand; returns the whole datastore */
    async function mergeAll (broadcasts: GoNode[][], nodes: GoNode[], init: CRDTDatastoreInit): Promise<string[]> {
      const r = await memoryReplica({ repairInterval: 0, ...init })
      try {
        for (const n of nodes) await r.blockstore.put(n.cid, n.bytes)
        for (const heads of broadcasts) {
          await r.store.receive(encodeBroadcast(heads.map(h => ({ cid: h.cid, dagName: '' }))))
        }
        return await dump(r.datastore)
      } finally {
        await r.store.stop()
      }
    }

    /** `items` shuffled by a seeded generator */
    function shuffle <T> (items: T[], seed: number): T[] {
      const out = [...items]
      let state = seed >>> 0
      for (let i = out.length - 1; i > 0; i--) {
        state = (Math.imul(state, 1664525) + 1013904223) >>> 0
        const j = state % (i + 1)
        ;[out[i], out[j]] = [out[j], out[i]]
      }
      return out
    }

    it('random go-shaped DAGs with over-claiming nodes anywhere end in identical datastores, one node per batch or many, whatever order nodes arrive in', async () => {
      let refused = 0
      await fc.assert(fc.asyncProperty(fc.array(nodeSpec, { minLength: 1, maxLength: 24 }), fc.nat(), async (specs, seed) => {
        const built = await build(specs)
        const { nodes, firstHeads, heads } = built
        // the same broadcasts (the first half's heads, then every head) in both orders, merged one node per batch, a few, or up to the default
        const one = await mergeAll([firstHeads, heads], nodes, { maxMergeNodes: 1 })
        if (one.some(e => e.includes('/g/'))) refused++
        expect(await mergeAll([firstHeads, heads], nodes, { maxMergeNodes: 3 }), 'a few per batch').to.deep.equal(one)
        expect(await mergeAll([firstHeads, heads], nodes, {}), 'up to the default per batch').to.deep.equal(one)
        expect(await mergeAll([heads, firstHeads], nodes, { maxMergeNodes: 1 }), 'every head first, one per batch').to.deep.equal(one)
        expect(await mergeAll([heads, firstHeads], nodes, {}), 'every head first').to.deep.equal(one)
        // every node announced alone: links first, nodes before their links, shuffled
        const each = nodes.map(n => [n])
        const ascending = await mergeAll(each, nodes, {})
        expect(await mergeAll([...each].reverse(), nodes, {}), 'each node alone, nodes before their links').to.deep.equal(ascending)
        expect(await mergeAll([...each].reverse(), nodes, { maxMergeNodes: 1 }), 'each node alone, nodes before their links, one per batch').to.deep.equal(ascending)
        expect(await mergeAll(shuffle(each, seed), nodes, { maxMergeNodes: 3 }), `each node alone, shuffled (seed ${seed})`).to.deep.equal(ascending)
      }), { numRuns: 60 })
      // the runs met nodes refused for their priority
      expect(refused).to.be.greaterThan(0)
    })
  })
})
