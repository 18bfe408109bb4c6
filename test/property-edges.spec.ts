/**
 * Property tests (fast-check) for the edges of issue #12:
 *
 * - Arbitrary Unicode keys and DAG names on LevelDB: every key written is
 *   listed, with or without a prefix, before and after a reopen, and the
 *   heads of every DAG are loaded again.
 * - Hand-built go-style DAGs (a key put twice in one node, empty values,
 *   tombstones naming unknown ids, non-canonical DAG names, many links)
 *   merged in different orders end in the same state, the one a reference
 *   computation of the add-wins set gives.
 * - Deletes of keys with many live elements write only nodes within
 *   maxBatchDeltaSize, and replicate.
 *
 * Sizes are explicit and small so this file stays within a few seconds.
 */

import { expect } from 'aegir/chai'
import fc from 'fast-check'
import { Key } from 'interface-datastore'
import all from 'it-all'
import { CID } from 'multiformats/cid'
import { compare as uint8ArrayCompare } from 'uint8arrays/compare'
import { blockKey } from '../src/codec/block-key.js'
import { cleanKey } from '../src/crdt/layout.js'
import { decodeNode } from '../src/index.js'
import { deliver, goNode } from './fixtures/go-nodes.js'
import { missingCid } from './fixtures/hostile-blocks.js'
import { stateOf } from './fixtures/network.js'
import { dec, enc, levelReplica, memoryReplica, readBlock, syncReplica, tempDir } from './fixtures/stores.js'
import type { GoNode } from './fixtures/go-nodes.js'
import type { MemoryReplica } from './fixtures/stores.js'

const RUNS = Number(process.env.PROPERTY_RUNS ?? 0)
const runs = (n: number): number => RUNS > 0 ? Math.max(n, Math.floor(RUNS / 100)) : n

/** A path segment of any code points, without "/" and never "." or ".." */
const segmentArb = fc.string({ unit: 'binary', minLength: 1, maxLength: 6 })
  .map(s => s.replaceAll('/', '_'))
  .filter(s => s !== '.' && s !== '..')

const keyArb = fc.array(segmentArb, { minLength: 1, maxLength: 3 }).map(parts => '/' + parts.join('/'))
const dagNameArb = fc.oneof(fc.constant(''), fc.array(segmentArb, { minLength: 1, maxLength: 2 }).map(parts => parts.join('/')))

describe('property: Unicode keys and DAG names on LevelDB', () => {
  it('every key is listed, with and without a prefix, and the heads of every DAG reload', async function () {
    this.timeout(120_000)
    await fc.assert(fc.asyncProperty(
      fc.array(fc.record({ key: keyArb, value: fc.string({ maxLength: 4 }), dagName: dagNameArb, remove: fc.boolean() }), { minLength: 1, maxLength: 12, size: 'max' }),
      fc.nat(),
      async (ops, pick) => {
        const dir = await tempDir('crdt-prop-unicode')
        try {
          const model = new Map<string, string>()
          const heights = new Map<string, number>()
          const first = await levelReplica(dir.path, { repairInterval: 0 })
          try {
            for (const op of ops) {
              const k = cleanKey(new Key(op.key).toString())
              if (op.remove) {
                await first.store.delete(new Key(op.key), { dagName: op.dagName })
                model.delete(k)
              } else {
                await first.store.put(new Key(op.key), enc(op.value), { dagName: op.dagName })
                model.set(k, op.value)
              }
              heights.set(op.dagName, 0)
            }
            for (const name of heights.keys()) heights.set(name, first.store.heads(name).length)
          } finally {
            await first.close()
          }
          const second = await levelReplica(dir.path, { repairInterval: 0 })
          try {
            const expected = [...model].map(([k, v]) => `${k}=${v}`).sort()
            expect(await stateOf(second.store)).to.deep.equal(expected)
            const keys = [...model.keys()]
            if (keys.length > 0) {
              const some = keys[pick % keys.length]
              const prefix = some.slice(0, 1 + (pick % some.length))
              const listed = (await all(second.store.queryKeys({ prefix }))).map(String).sort()
              expect(listed).to.deep.equal(keys.filter(k => k.startsWith(prefix)).sort())
            }
            for (const [name, count] of heights) {
              expect(second.store.heads(name), `heads of ${JSON.stringify(name)}`).to.have.lengthOf(count)
            }
          } finally {
            await second.close()
          }
        } finally {
          await dir.remove()
        }
      }
    ), { numRuns: runs(25) })
  })
})

/** A node of a generated go-style DAG */
interface NodeSpec {
  elements: Array<{ key: string, value: string }>
  /** Tombstones: [key, index of an earlier node, or -1 for an id nobody has] */
  tombstones: Array<[string, number]>
  links: number[]
  dagSpelling: number
}

const GO_KEYS = ['/a', 'a', '/b', '/a/b', '/c']
const GO_VALUES = ['', 'x', 'y', 'xy', 'ÿ']
/** Spellings of the DAG "d" (and the default DAG) a go-style writer may send */
const DAG_SPELLINGS = ['d', '/d', 'd/', '//d//']

function dagArb (size: number): fc.Arbitrary<NodeSpec[]> {
  return fc.tuple(...Array.from({ length: size }, (_, i) => fc.record({
    elements: fc.array(fc.record({ key: fc.constantFrom(...GO_KEYS), value: fc.constantFrom(...GO_VALUES) }), { minLength: 0, maxLength: 4 }),
    tombstones: fc.array(fc.tuple(fc.constantFrom(...GO_KEYS), fc.integer({ min: -1, max: i - 1 })), { minLength: 0, maxLength: 3 }),
    links: i === 0 ? fc.constant([] as number[]) : fc.uniqueArray(fc.nat(i - 1), { minLength: 0, maxLength: i, size: 'max' }),
    dagSpelling: fc.nat(DAG_SPELLINGS.length - 1)
  })))
}

interface BuiltDAG {
  nodes: GoNode[]
  priorities: number[]
  specs: NodeSpec[]
}

async function buildDAG (specs: NodeSpec[], unknownId: string): Promise<BuiltDAG> {
  const nodes: GoNode[] = []
  const priorities: number[] = []
  for (const spec of specs) {
    const priority = 1 + spec.links.reduce((max, l) => Math.max(max, priorities[l]), 0)
    const node = await goNode({
      elements: spec.elements,
      tombstones: spec.tombstones.map(([key, target]) => ({ key, id: target < 0 ? unknownId : blockKey(nodes[target].cid) })),
      priority,
      dagName: DAG_SPELLINGS[spec.dagSpelling],
      links: spec.links.map(l => nodes[l].cid)
    })
    nodes.push(node)
    priorities.push(priority)
  }
  return { nodes, priorities, specs }
}

/**
 * The state the add-wins set must reach once every node is merged: per key,
 * the live element (not named by any tombstone) with the highest priority,
 * ties to the byte-wise greatest value; a node counts once per key, with
 * its greatest value.
 */
function reference (dag: BuiltDAG): string[] {
  const dead = new Set<string>()
  for (const spec of dag.specs) {
    for (const [key, target] of spec.tombstones) {
      if (target >= 0) dead.add(`${cleanKey(key)} ${target}`)
    }
  }
  const best = new Map<string, { priority: number, value: Uint8Array }>()
  for (const [i, spec] of dag.specs.entries()) {
    for (const { key, value } of spec.elements) {
      const k = cleanKey(key)
      if (dead.has(`${k} ${i}`)) continue
      const candidate = { priority: dag.priorities[i], value: enc(value) }
      const current = best.get(k)
      if (current == null || candidate.priority > current.priority || (candidate.priority === current.priority && uint8ArrayCompare(candidate.value, current.value) > 0)) {
        best.set(k, candidate)
      }
    }
  }
  return [...best].map(([k, v]) => `${k}=${dec(v.value)}`).sort()
}

describe('property: go-style DAGs converge whatever the merge order', () => {
  let unknownId: string
  before(async () => { unknownId = blockKey(await missingCid('property-edges')) })

  it('two replicas merging the nodes in different orders agree, with the reference and on their heads', async function () {
    this.timeout(120_000)
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1, max: 9 }).chain(n => fc.record({
        specs: dagArb(n),
        orders: fc.tuple(
          fc.shuffledSubarray([...Array(n).keys()], { minLength: n, maxLength: n }),
          fc.shuffledSubarray([...Array(n).keys()], { minLength: n, maxLength: n })
        )
      })),
      async ({ specs, orders }) => {
        const dag = await buildDAG(specs, unknownId)
        const states: string[][] = []
        const heads: string[][] = []
        for (const order of orders) {
          const r: MemoryReplica = await memoryReplica({ repairInterval: 0 })
          try {
            for (const i of order) {
              await deliver(r, dag.nodes, dag.nodes[i], 'd')
            }
            states.push(await stateOf(r.store))
            heads.push(r.store.heads().map(h => `${h.dagName}:${h.cid.toString()}`).sort())
            expect(await r.store.pendingBranches()).to.have.lengthOf(0)
            for (const h of r.store.heads()) expect(h.dagName).to.equal('d')
          } finally {
            await r.store.stop()
          }
        }
        expect(states[0]).to.deep.equal(reference(dag))
        expect(states[1]).to.deep.equal(states[0])
        expect(heads[1]).to.deep.equal(heads[0])
      }
    ), { numRuns: runs(60) })
  })
})

describe('property: deletes stay within maxBatchDeltaSize', () => {
  it('every node a delete writes is within the limit, and the delete replicates', async function () {
    this.timeout(120_000)
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 256, max: 2048 }),
      fc.array(fc.record({ key: fc.constantFrom('/p/1', '/p/2', '/p/3', '/p/ÿ', '/q'), value: fc.string({ maxLength: 3 }) }), { minLength: 1, maxLength: 60, size: 'max' }),
      async (limit, puts) => {
        const a = await memoryReplica({ repairInterval: 0, maxBatchDeltaSize: limit })
        const b = await memoryReplica({ repairInterval: 0, maxBatchDeltaSize: limit })
        try {
          for (const { key, value } of puts) await a.store.put(new Key(key), enc(value))
          await syncReplica(a, b)
          const keys = [...new Set(puts.map(p => p.key))].map(k => new Key(k))
          await all(a.store.deleteMany(keys))
          for await (const stored of a.blockstore.getAll()) {
            const cid = CID.createV1(0x70, stored.cid.multihash)
            const bytes = await readBlock(a.blockstore, cid)
            const { decode } = await import('@ipld/dag-pb')
            expect((decode(bytes).Data ?? new Uint8Array(0)).byteLength).to.be.at.most(limit)
            decodeNode(cid, bytes)
          }
          expect(await stateOf(a.store)).to.deep.equal([])
          await syncReplica(a, b)
          expect(await stateOf(b.store)).to.deep.equal([])
        } finally {
          await a.store.stop()
          await b.store.stop()
        }
      }
    ), { numRuns: runs(15) })
  })
})
