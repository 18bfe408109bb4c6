/**
 * Property tests (fast-check).
 *
 * - Random operation histories on several in-process replicas, synced in
 *   random orders, agree with a reference model after every step; replicas
 *   merged in different orders end with identical datastores
 *   (commutativity); re-delivered blocks and heads change nothing
 *   (idempotence).
 * - The decoders of deltas, broadcasts and dag-pb nodes, fed random and
 *   mutated bytes, return well-formed values or throw their named error,
 *   quickly.
 *
 * The history generator is sized explicitly (10-40 steps, `size: 'max'`),
 * so histories are long at every run count. Every replica writes, every
 * sync step moves blocks between two different replicas, and every history
 * ends with a put that nothing can have deleted, so the final comparison is
 * never between empty stores; the test asserts these statistics over the
 * runs it made. Keys and values include non-ASCII text (accents, CJK,
 * emoji, combining marks). These histories run on MemoryDatastore: the
 * LevelDB prefix bug with non-ASCII keys (issue #12 item 2) is fixed
 * elsewhere, and persistence.spec.ts covers LevelDB.
 *
 * `PROPERTY_RUNS=100000` gives each decoder property 100,000 inputs (a full
 * run); the default (2,000 inputs, 100 histories) keeps this file under
 * ~30 s. No decode is timed (speed lives in benchmarks/): one that hangs
 * fails on mocha's timeout. `PROPERTY_STATS=1` prints
 * what the histories reached (steps, syncs, deletes, merged keys).
 */

import { expect } from 'aegir/chai'
import fc from 'fast-check'
import { Key } from 'interface-datastore'
import { base32upper } from 'multiformats/bases/base32'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { isBlockKey } from '../src/codec/block-key.js'
import { MAX_BROADCAST_HEADS } from '../src/codec/broadcast.js'
import { canonicalDagName, MAX_PRIORITY } from '../src/codec/delta.js'
import { decodeBroadcast, decodeDelta, decodeNode, encodeBroadcast, encodeDelta, encodeNode } from '../src/index.js'
import { CRDTModel } from './fixtures/crdt-model.js'
import { rng, stateOf } from './fixtures/network.js'
import { delta as pbDelta, element as pbElement } from './fixtures/pb-writer.js'
import { enc, memoryReplica, readBlock, syncReplica } from './fixtures/stores.js'
import type { ModelOp } from './fixtures/crdt-model.js'
import type { MemoryReplica } from './fixtures/stores.js'
import type { Pair } from 'interface-datastore'

// npm test's depth; `npm run test:property` runs 100,000 (and so 4,000 histories)
const RUNS = Number(process.env.PROPERTY_RUNS ?? 2000)
const HISTORY_RUNS = Math.max(Math.min(RUNS, 100), Math.floor(RUNS / 25))

const KEYS = ['/a', '/b', '/c', '/c/d', '/e f', '/ü', '/日本/語', '/😀', '/e\u0301']
const VALUES = ['x', 'y', 'z', 'xx', '', 'ü', '語', '😀', 'e\u0301']
/** Steps per history, before the final put */
const MIN_STEPS = 10
const MAX_STEPS = 40

type Step =
  | { kind: 'write', r: number, ops: ModelOp[] }
  | { kind: 'sync', from: number, to: number }

const opArb = fc.record({ key: fc.constantFrom(...KEYS), value: fc.option(fc.constantFrom(...VALUES), { nil: undefined, freq: 3 }) })
const putArb = fc.record({ key: fc.constantFrom(...KEYS), value: fc.constantFrom(...VALUES) })

function stepArb (n: number): fc.Arbitrary<Step> {
  const r = fc.nat(n - 1)
  return fc.oneof(
    { arbitrary: fc.record({ kind: fc.constant('write' as const), r, ops: fc.array(opArb, { minLength: 1, maxLength: 1 }) }), weight: 5 },
    { arbitrary: fc.record({ kind: fc.constant('write' as const), r, ops: fc.array(opArb, { minLength: 2, maxLength: 5, size: 'max' }) }), weight: 2 },
    // a sync always moves blocks between two different replicas
    { arbitrary: fc.tuple(r, fc.integer({ min: 1, max: n - 1 })).map(([from, shift]): Step => ({ kind: 'sync', from, to: (from + shift) % n })), weight: 3 }
  )
}

/**
 * A history: every replica first puts one key (so every replica writes),
 * then MIN_STEPS-MAX_STEPS random steps, then one last put on a random
 * replica. Nothing can tombstone that last element (no replica saw it
 * before), so the merged state always holds at least one key.
 */
const historyArb = fc.integer({ min: 2, max: 4 }).chain(n => fc.record({
  n: fc.constant(n),
  steps: fc.tuple(
    fc.array(putArb, { minLength: n, maxLength: n }),
    fc.array(stepArb(n), { minLength: MIN_STEPS, maxLength: MAX_STEPS, size: 'max' }),
    fc.nat(n - 1),
    putArb
  ).map(([first, middle, last, lastOp]): Step[] => [
    ...first.map((op, r): Step => ({ kind: 'write', r, ops: [op] })),
    ...middle,
    { kind: 'write', r: last, ops: [lastOp] }
  ]),
  order: fc.shuffledSubarray([...Array(n).keys()], { minLength: n, maxLength: n }),
  shuffle: fc.integer({ min: 0, max: 2 ** 31 - 1 })
}))

async function write (r: MemoryReplica, ops: ModelOp[]): Promise<void> {
  if (ops.length === 1) {
    const [op] = ops
    if (op.value == null) await r.store.delete(new Key(op.key))
    else await r.store.put(new Key(op.key), enc(op.value))
    return
  }
  const batch = r.store.batch()
  for (const op of ops) {
    if (op.value == null) batch.delete(new Key(op.key))
    else batch.put(new Key(op.key), enc(op.value))
  }
  await batch.commit()
}

async function dump (r: MemoryReplica): Promise<string[]> {
  const out: string[] = []
  for await (const { key, value } of r.datastore.query({}) as AsyncIterable<Pair>) {
    // the bad-shutdown marker and version are the same everywhere; everything else must match too
    out.push(`${key.toString()}=${Buffer.from(value).toString('hex')}`)
  }
  return out.sort()
}

/** Every DAG node CID held by the given replicas */
async function allNodes (replicas: MemoryReplica[]): Promise<CID[]> {
  const seen = new Map<string, CID>()
  for (const r of replicas) {
    for await (const { cid } of r.blockstore.getAll()) {
      const node = CID.createV1(0x70, cid.multihash)
      seen.set(node.toString(), node)
    }
  }
  return [...seen.values()].sort((a, b) => a.toString() < b.toString() ? -1 : 1)
}

function shuffled <T> (items: T[], seed: number): T[] {
  const random = rng(seed)
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[out[i], out[j]] = [out[j], out[i]]
  }
  return out
}

describe('properties of replication', function () {
  this.timeout(120_000)

  it('random histories on 2-4 replicas match the reference model at every step, and merge to one datastore in any order', async () => {
    // what the histories reached, checked after the runs: a weak generator fails here
    const stats = { runs: 0, steps: 0, syncs: 0, deletes: 0, keys: 0, nonAscii: 0, emptyMerges: 0 }
    await fc.assert(fc.asyncProperty(historyArb, async ({ n, steps, order, shuffle }) => {
      stats.runs++
      stats.steps += steps.length
      const model = new CRDTModel(n + 1)
      const replicas: MemoryReplica[] = []
      const observers: MemoryReplica[] = []
      try {
        for (let i = 0; i < n; i++) replicas.push(await memoryReplica({ repairInterval: 0 }))
        for (const step of steps) {
          if (step.kind === 'write') {
            const before = model.state(step.r).map(e => e.slice(0, e.indexOf('=')))
            if (step.ops.some(op => op.value == null && before.includes(op.key))) stats.deletes++
            model.write(step.r, step.ops)
            await write(replicas[step.r], step.ops)
            expect(await stateOf(replicas[step.r].store), `replica ${step.r} after a write`).to.deep.equal(model.state(step.r))
            expect(replicas[step.r].store.heads().map(h => h.height).sort((a, b) => a - b)).to.deep.equal(model.headHeights(step.r))
          } else {
            expect(step.from, 'a sync between two replicas').to.not.equal(step.to)
            stats.syncs++
            model.sync(step.from, step.to)
            await syncReplica(replicas[step.from], replicas[step.to])
            expect(await stateOf(replicas[step.to].store), `replica ${step.to} after a sync`).to.deep.equal(model.state(step.to))
          }
        }
        for (let i = 0; i < n; i++) model.sync(i, n)
        const expected = model.state(n)
        if (expected.length === 0) stats.emptyMerges++
        stats.keys += expected.length
        // eslint-disable-next-line no-control-regex
        stats.nonAscii += expected.filter(e => /[^\x00-\x7f]/.test(e.slice(0, e.indexOf('=')))).length

        // observer A hears every replica's heads, in a random order of replicas
        const a = await memoryReplica({ repairInterval: 0 })
        observers.push(a)
        for (const i of order) await syncReplica(replicas[i], a)
        // observer B gets every block first, then hears of every node by itself, in a random order
        const b = await memoryReplica({ repairInterval: 0 })
        observers.push(b)
        const nodes = await allNodes(replicas)
        for (const r of replicas) {
          for (const cid of nodes) {
            if (await r.blockstore.has(cid)) await b.blockstore.put(cid, await readBlock(r.blockstore, cid))
          }
        }
        for (const cid of shuffled(nodes, shuffle)) await b.store.receive(encodeBroadcast([{ cid, dagName: '' }]))

        expect(await stateOf(a.store)).to.deep.equal(expected)
        expect(await stateOf(b.store)).to.deep.equal(expected)
        const dumpA = await dump(a)
        expect(await dump(b), 'datastores merged in different orders').to.deep.equal(dumpA)
        expect(a.store.heads().map(h => h.height).sort((x, y) => x - y)).to.deep.equal(model.headHeights(n))
        // the heads are exactly the nodes no node links to, on both observers
        const linked = new Set<string>()
        for (const cid of nodes) {
          for (const link of decodeNode(cid, await readBlock(b.blockstore, cid)).links) linked.add(link.toString())
        }
        const tips = nodes.map(String).filter(cid => !linked.has(cid)).sort()
        expect(a.store.heads().map(h => h.cid.toString()).sort(), 'heads of observer A').to.deep.equal(tips)
        expect(b.store.heads().map(h => h.cid.toString()).sort(), 'heads of observer B').to.deep.equal(tips)
        expect(await b.store.pendingBranches()).to.have.lengthOf(0)
        expect(await a.store.pendingBranches()).to.have.lengthOf(0)

        // idempotence: every block and head delivered again changes nothing
        let processed = 0
        a.store.addEventListener('processed', () => { processed++ })
        for (const i of [...order].reverse()) await syncReplica(replicas[i], a)
        for (const cid of nodes) await a.store.receive(encodeBroadcast([{ cid, dagName: '' }]))
        await syncReplica(b, a)
        expect(processed).to.equal(0)
        expect(await dump(a), 'after re-delivery').to.deep.equal(dumpA)

        // and the replicas themselves converge on the same state
        for (let i = 1; i < n; i++) await syncReplica(replicas[i], replicas[0])
        for (let i = 1; i < n; i++) await syncReplica(replicas[0], replicas[i])
        for (const r of replicas) expect(await stateOf(r.store)).to.deep.equal(expected)
      } finally {
        await Promise.all([...replicas, ...observers].map(async r => r.store.stop()))
      }
    }), {
      numRuns: HISTORY_RUNS,
      examples: [
        // equal writes on equal heads are one block (one CID) on both replicas
        [{ n: 2, steps: [{ kind: 'write', r: 0, ops: [{ key: '/a', value: 'x' }] }, { kind: 'write', r: 1, ops: [{ key: '/a', value: 'x' }] }, { kind: 'sync', from: 0, to: 1 }], order: [1, 0], shuffle: 1 }],
        // concurrent put and delete of one key: add wins over a delete that did not see the put
        [{ n: 2, steps: [{ kind: 'write', r: 0, ops: [{ key: '/a', value: 'x' }] }, { kind: 'sync', from: 0, to: 1 }, { kind: 'write', r: 1, ops: [{ key: '/a' }] }, { kind: 'write', r: 0, ops: [{ key: '/a', value: 'y' }] }], order: [0, 1], shuffle: 2 }]
      ]
    })

    if (process.env.PROPERTY_STATS != null) process.stdout.write(`${JSON.stringify(stats)}\n`)
    expect(stats.runs).to.be.at.least(HISTORY_RUNS)
    expect(stats.emptyMerges, 'histories that merged to an empty store').to.equal(0)
    expect(stats.steps / stats.runs, 'mean steps per history').to.be.at.least(MIN_STEPS)
    expect(stats.syncs / stats.runs, 'mean syncs per history').to.be.at.least(2)
    expect(stats.deletes / stats.runs, 'mean deletes of a present key per history').to.be.at.least(1)
    expect(stats.keys / stats.runs, 'mean keys in the merged state').to.be.at.least(2)
    expect(stats.nonAscii, 'non-ASCII keys in merged states').to.be.greaterThan(0)
  })
})

// --- decoders ------------------------------------------------------------------

type Mutation =
  | { op: 'flip', at: number, bit: number }
  | { op: 'cut', at: number }
  | { op: 'insert', at: number, bytes: Uint8Array }
  | { op: 'remove', at: number, length: number }
  | { op: 'repeat', at: number, length: number }

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat(7) }),
  fc.record({ op: fc.constant('cut' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 12 }) }),
  fc.record({ op: fc.constant('remove' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ op: fc.constant('repeat' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 64 }) })
)

function mutate (bytes: Uint8Array, mutations: Mutation[]): Uint8Array {
  let out = [...bytes]
  for (const m of mutations) {
    const at = out.length === 0 ? 0 : m.at % out.length
    switch (m.op) {
      case 'flip':
        if (out.length > 0) out[at] ^= 1 << m.bit
        break
      case 'cut':
        out = out.slice(0, at)
        break
      case 'insert':
        out.splice(at, 0, ...m.bytes)
        break
      case 'remove':
        out.splice(at, m.length)
        break
      case 'repeat':
        out.splice(at, 0, ...out.slice(at, at + m.length))
        break
      // no default
    }
  }
  return Uint8Array.from(out)
}

/** Runs a decoder: it returns, or throws one of the `allowed` named errors */
function decodesOrThrows <T> (fn: () => T, allowed: string[]): T | undefined {
  try {
    return fn()
  } catch (err: any) {
    if (!allowed.includes(err?.name)) {
      throw new Error(`threw ${err?.name ?? typeof err} (${err?.message}) instead of ${allowed.join(' or ')}`)
    }
    if (typeof err.message !== 'string' || err.message === '') throw new Error(`${err.name} without a message`)
    return undefined
  }
}

const textArb = fc.string({ unit: 'grapheme', maxLength: 12 })
const elementArb = fc.record({ key: textArb, id: textArb, value: fc.uint8Array({ maxLength: 24 }) })
/** Tombstone ids: mostly one block key (what honest writers send), sometimes any text (refused) */
const tombIdArb = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ minLength: 32, maxLength: 32 }).map(d => '/' + base32upper.baseEncode(Uint8Array.of(0x12, 0x20, ...d))) },
  { weight: 1, arbitrary: textArb }
)
const tombArb = fc.record({ key: textArb, id: tombIdArb, value: fc.uint8Array({ maxLength: 24 }) })
const deltaArb = fc.record({
  elements: fc.array(elementArb, { maxLength: 4 }),
  tombstones: fc.array(tombArb, { maxLength: 4 }),
  priority: fc.oneof(fc.bigInt({ min: 0n, max: 1000n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.constantFrom(BigInt(MAX_PRIORITY), BigInt(MAX_PRIORITY) + 1n)),
  dagName: fc.oneof(fc.constant(''), textArb)
})
const digestArb = fc.uint8Array({ minLength: 32, maxLength: 32 })

type DeltaInput = typeof deltaArb extends fc.Arbitrary<infer T> ? T : never

function pbDeltaBytes (d: DeltaInput): Uint8Array {
  const el = (e: { key: string, id: string, value: Uint8Array }): number[] => pbElement(e.key, e.id, e.value)
  return Uint8Array.from(pbDelta(d.elements.map(el), d.tombstones.map(el), d.priority, d.dagName))
}

/** What decoding the delta `d` must give: saturated priority, canonical DAG name */
function expectedDelta (d: DeltaInput): ReturnType<typeof decodeDelta> {
  return {
    elements: d.elements,
    tombstones: d.tombstones,
    priority: d.priority > BigInt(MAX_PRIORITY) ? MAX_PRIORITY : Number(d.priority),
    dagName: canonicalDagName(d.dagName)
  }
}

function checkDelta (delta: ReturnType<typeof decodeDelta>): void {
  expect(Number.isSafeInteger(delta.priority) && delta.priority >= 0 && delta.priority <= MAX_PRIORITY).to.equal(true)
  expect(typeof delta.dagName).to.equal('string')
  for (const e of [...delta.elements, ...delta.tombstones]) {
    expect(typeof e.key).to.equal('string')
    expect(typeof e.id).to.equal('string')
    expect(e.value).to.be.an.instanceOf(Uint8Array)
  }
}

function checkNode (cid: CID, node: ReturnType<typeof decodeNode>): void {
  expect(node.cid.equals(cid)).to.equal(true)
  for (const link of node.links) expect(link.code).to.equal(0x70)
  checkDelta(node.delta)
}

describe('properties of the decoders', function () {
  this.timeout(600_000)
  const params = { numRuns: RUNS }

  it(`decodeDelta: well-formed deltas round-trip; random and mutated bytes give a delta or MalformedDeltaError (${RUNS} runs each)`, () => {
    fc.assert(fc.property(deltaArb, d => {
      const bytes = pbDeltaBytes(d)
      const decoded = decodesOrThrows(() => decodeDelta(bytes), ['MalformedDeltaError'])
      // untrusted deltas: tombstone ids must be block keys; priorities saturate; DAG names are canonical
      if (!d.tombstones.every(t => isBlockKey(t.id))) {
        expect(decoded, 'a tombstone id that is not one block key is refused').to.equal(undefined)
        return
      }
      expect(decoded).to.deep.equal(expectedDelta(d))
      const canonical = d.priority <= BigInt(MAX_PRIORITY) && canonicalDagName(d.dagName) === d.dagName
      if (decoded != null && canonical) expect(encodeDelta(decoded)).to.deep.equal(bytes)
    }), params)
    fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), bytes => {
      const decoded = decodesOrThrows(() => decodeDelta(bytes), ['MalformedDeltaError'])
      if (decoded != null) checkDelta(decoded)
    }), params)
    fc.assert(fc.property(deltaArb, fc.array(mutationArb, { minLength: 1, maxLength: 6 }), (d, mutations) => {
      const decoded = decodesOrThrows(() => decodeDelta(mutate(pbDeltaBytes(d), mutations)), ['MalformedDeltaError'])
      if (decoded != null) checkDelta(decoded)
    }), params)
  })

  it(`decodeBroadcast: random and mutated bytes give dag-pb heads or MalformedBroadcastError (${RUNS} runs each)`, async () => {
    const headArb = fc.record({ digest: digestArb, dagName: fc.oneof(fc.constant(''), textArb) })
    const toHeads = async (heads: Array<{ digest: Uint8Array, dagName: string }>): Promise<Array<{ cid: CID, dagName: string }>> => Promise.all(heads.map(async h => ({ cid: CID.createV1(0x70, await sha256.digest(h.digest)), dagName: h.dagName })))
    const check = (decoded: Map<string, CID[]> | undefined): void => {
      if (decoded == null) return
      let count = 0
      for (const [name, cids] of decoded) {
        expect(typeof name).to.equal('string')
        expect(cids.length).to.be.greaterThan(0)
        for (const cid of cids) expect(cid.code).to.equal(0x70)
        count += cids.length
      }
      expect(count).to.be.within(1, MAX_BROADCAST_HEADS)
    }
    await fc.assert(fc.asyncProperty(fc.array(headArb, { minLength: 1, maxLength: 6 }), async heads => {
      const list = await toHeads(heads)
      const decoded = decodesOrThrows(() => decodeBroadcast(encodeBroadcast(list)), ['MalformedBroadcastError'])
      expect(decoded, 'a well-formed broadcast decodes').to.not.equal(undefined)
      expect([...(decoded?.values() ?? [])].flat().map(String).sort()).to.deep.equal([...new Set(list.map(h => h.cid.toString()))].sort())
    }), params)
    fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), bytes => {
      check(decodesOrThrows(() => decodeBroadcast(bytes), ['MalformedBroadcastError']))
    }), params)
    await fc.assert(fc.asyncProperty(fc.array(headArb, { minLength: 1, maxLength: 4 }), fc.array(mutationArb, { minLength: 1, maxLength: 6 }), async (heads, mutations) => {
      const bytes = mutate(encodeBroadcast(await toHeads(heads)), mutations)
      check(decodesOrThrows(() => decodeBroadcast(bytes), ['MalformedBroadcastError']))
    }), params)
  })

  it(`decodeNode: random and mutated blocks give a node or MalformedBlockError / MalformedDeltaError (${RUNS} runs each)`, async () => {
    const allowed = ['MalformedBlockError', 'MalformedDeltaError']
    const codecArb = fc.constantFrom(0x70, 0x70, 0x70, 0x55, 0x71, 0x0129)
    await fc.assert(fc.asyncProperty(deltaArb, fc.array(digestArb, { maxLength: 4 }), async (d, linkDigests) => {
      if (d.priority > BigInt(MAX_PRIORITY)) return
      const links = await Promise.all(linkDigests.map(async dg => CID.createV1(0x70, await sha256.digest(dg))))
      const built = await encodeNode({ ...d, priority: Number(d.priority) }, links)
      const decoded = decodesOrThrows(() => decodeNode(built.cid, built.bytes), allowed)
      if (!d.tombstones.every(t => isBlockKey(t.id))) {
        expect(decoded).to.equal(undefined)
        return
      }
      // duplicate links are removed at decode
      expect(decoded?.links.map(String)).to.deep.equal([...new Set(links.map(String))])
      expect(decoded?.delta).to.deep.equal(expectedDelta(d))
    }), params)
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 512 }), codecArb, digestArb, async (bytes, codec, digest) => {
      const cid = CID.createV1(codec, await sha256.digest(digest))
      const decoded = decodesOrThrows(() => decodeNode(cid, bytes), allowed)
      if (decoded != null) checkNode(cid, decoded)
      if (codec !== 0x70) expect(decoded).to.equal(undefined)
    }), params)
    await fc.assert(fc.asyncProperty(deltaArb, fc.array(digestArb, { maxLength: 3 }), fc.array(mutationArb, { minLength: 1, maxLength: 6 }), async (d, linkDigests, mutations) => {
      const links = await Promise.all(linkDigests.map(async dg => CID.createV1(0x70, await sha256.digest(dg))))
      const built = await encodeNode({ ...d, priority: Number(d.priority > BigInt(MAX_PRIORITY) ? 1n : d.priority) }, links)
      const bytes = mutate(built.bytes, mutations)
      const decoded = decodesOrThrows(() => decodeNode(built.cid, bytes), allowed)
      if (decoded != null) checkNode(built.cid, decoded)
    }), params)
  })
})
