/**
 * Bounded history under fast-check (#16 item 6): generated histories on
 * 2-4 replicas of the in-process network (announcing payloads with their
 * sender, as gossipsub does; LevelDB stores in temp dirs so replicas can
 * restart) mix puts, deletes and batches (Unicode keys with combining marks
 * and astral characters, empty values), partitions and heals, `compact()`
 * on any replica, replicas that stop or crash (away, possibly with writes
 * the others never saw) and come back, clean restarts, and one fresh replica joining
 * late. Every replica has compaction configured (interval 0: only on
 * `compact()`), with a short membership window, so a replica away for a
 * while stops being a known replica and the others compact without it.
 *
 * After every step each group of reachable replicas settles and every
 * online replica must equal the reference model (test/fixtures/crdt-model.ts:
 * add-wins, highest priority then greatest bytes, a delete removes what its
 * writer saw). At the end everything heals and restarts: all replicas equal
 * each other and the model, so no acknowledged write is lost and no delete
 * comes back, whatever was compacted. Statistics over the runs check the
 * generator really compacted (blocks removed), with replicas away, and had
 * late joiners and restarts.
 *
 * Each group must also agree on its heads before a step counts as
 * settled: equal states do not show that a write arrived (it may change
 * nothing visible), and the model would count it as seen by a later delete.
 * Histories random runs failed on are played as found in the last
 * describe block.
 *
 * Snapshots are removals (src/snapshot/removal.ts): the model removes, at
 * each `compact()`, the values overwritten in what that replica merged, and
 * carries removals along with nodes. A regression case pins the bug this
 * property found when compaction first dropped overwritten elements: a
 * later delete on that replica carried too few tombstones and the old value
 * came back on replicas that had not compacted; they now apply the
 * snapshot's removal when they pass it.
 */

import { expect } from 'aegir/chai'
import fc from 'fast-check'
import { Key } from 'interface-datastore'
import { blockKey, cidFromBlockKey } from '../src/codec/block-key.js'
import { decodeNode } from '../src/codec/dag-node.js'
import { CRDTModel } from './fixtures/crdt-model.js'
import { stateOf, TestNetwork } from './fixtures/network.js'
import { enc, memoryReplica, readBlock, syncReplica, tempDir } from './fixtures/stores.js'
import type { ModelOp } from './fixtures/crdt-model.js'
import type { CRDTDatastore } from '../src/index.js'

/**
 * Generated histories beside the explicit examples: `npm test` plays
 * `DEFAULT_RANDOM_RUNS` (a few seconds in all);
 * `COMPACTION_PROPERTY_RUNS=n` plays n instead, `COMPACTION_PROPERTY_SEED`
 * replays a seed (a heads mismatch often depends on timing and does not
 * replay: `COMPACTION_PROPERTY_DUMP=1` then says what each replica holds).
 */
const DEFAULT_RANDOM_RUNS = 2
const RANDOM_RUNS = Number(process.env.COMPACTION_PROPERTY_RUNS ?? DEFAULT_RANDOM_RUNS)
const SEED = process.env.COMPACTION_PROPERTY_SEED == null ? undefined : Number(process.env.COMPACTION_PROPERTY_SEED)
/** `COMPACTION_PROPERTY_DUMP=1`: a heads mismatch also writes `dumpHeads()` to stderr */
const DUMP = process.env.COMPACTION_PROPERTY_DUMP != null
/** The explicit examples below */
const EXAMPLES = 3
const RUNS = EXAMPLES + RANDOM_RUNS
const KEYS = ['/a', '/b', '/b/c', '/ü', '/e\u0301', '/😀', '/日本']
const VALUES = ['x', 'y', '', 'ü', '😀', 'e\u0301']
const MIN_STEPS = 12
const MAX_STEPS = 30
/** Replicas at most: up to 4 from the start and one that joins late */
const MAX_REPLICAS = 5
const REBROADCAST = 40
const MEMBERSHIP_WINDOW = 300

type Step =
  | { kind: 'write', r: number, ops: ModelOp[] }
  | { kind: 'partition', mask: number }
  | { kind: 'heal' }
  | { kind: 'compact', r: number }
  | { kind: 'stop', r: number, crash: boolean }
  | { kind: 'restart', r: number }
  | { kind: 'join' }

const opArb = fc.record({ key: fc.constantFrom(...KEYS), value: fc.option(fc.constantFrom(...VALUES), { nil: undefined, freq: 3 }) })
const putArb = fc.record({ key: fc.constantFrom(...KEYS), value: fc.constantFrom(...VALUES) })
const rArb = fc.nat(MAX_REPLICAS - 1)

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant('write' as const), r: rArb, ops: fc.array(opArb, { minLength: 1, maxLength: 1 }) }), weight: 8 },
  { arbitrary: fc.record({ kind: fc.constant('write' as const), r: rArb, ops: fc.array(opArb, { minLength: 2, maxLength: 5, size: 'max' }) }), weight: 3 },
  { arbitrary: fc.record({ kind: fc.constant('partition' as const), mask: fc.integer({ min: 1, max: 2 ** MAX_REPLICAS - 2 }) }), weight: 2 },
  { arbitrary: fc.constant({ kind: 'heal' as const }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('compact' as const), r: rArb }), weight: 4 },
  { arbitrary: fc.record({ kind: fc.constant('stop' as const), r: rArb, crash: fc.boolean() }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('restart' as const), r: rArb }), weight: 2 },
  { arbitrary: fc.constant({ kind: 'join' as const }), weight: 1 }
)

/**
 * A history: every starting replica puts a key, then the random steps,
 * then a put on the first replica after everything healed (nothing saw it,
 * so nothing can delete it: the final state is never empty)
 */
const historyArb = fc.record({
  n: fc.integer({ min: 2, max: 4 }),
  first: fc.array(putArb, { minLength: 4, maxLength: 4 }),
  steps: fc.array(stepArb, { minLength: MIN_STEPS, maxLength: MAX_STEPS, size: 'max' }),
  last: putArb,
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 })
})

/**
 * What the records of each online replica say about every head any of
 * them has (processed, walk and given-up records, covered heads, the
 * node's links), for a heads mismatch: `COMPACTION_PROPERTY_DUMP=1`
 * writes it to stderr (with `DEBUG=replica-*` the replicas' logs show how
 * each got there)
 */
async function dumpHeads (net: TestNetwork, online: number[], what: string): Promise<string> {
  const ids = new Set<string>()
  for (const i of online) for (const h of net.replicas[i].store.heads()) ids.add(blockKey(h.cid))
  let out = `heads mismatch after ${what}\n`
  for (const i of online) {
    const replica = net.replicas[i]
    out += `replica ${i} heads ${replica.store.heads().map(h => `${blockKey(h.cid)}@${h.height}`).join(' ')}\n`
    for await (const { key, value } of replica.datastore.query({})) {
      const k = key.toString()
      if ([...ids].some(id => k.includes(id)) || /\/[zgw]\//.test(k)) out += `  ${k} = ${Buffer.from(value).toString('hex').slice(0, 40)}\n`
    }
    for (const id of ids) {
      const cid = cidFromBlockKey(id)
      if (!(await replica.blockstore.has(cid))) {
        out += `  block ${id}: not here\n`
        continue
      }
      const node = decodeNode(cid, await readBlock(replica.blockstore.local, cid))
      out += `  block ${id}: priority ${node.delta.priority}, puts ${node.delta.elements.map(e => e.key).join(',')}, deletes ${node.delta.tombstones.map(t => t.key).join(',')}, links ${node.links.map(blockKey).join(' ')}\n`
    }
  }
  return out
}

async function write (store: CRDTDatastore, ops: ModelOp[]): Promise<void> {
  if (ops.length === 1) {
    const [op] = ops
    if (op.value == null) await store.delete(new Key(op.key))
    else await store.put(new Key(op.key), enc(op.value))
    return
  }
  const batch = store.batch()
  for (const op of ops) {
    if (op.value == null) batch.delete(new Key(op.key))
    else batch.put(new Key(op.key), enc(op.value))
  }
  await batch.commit()
}

interface Stats {
  runs: number
  /** runs of MIN_STEPS steps or more (all but the short examples) */
  long: number
  writes: number
  deletes: number
  compactions: number
  removedBlocks: number
  compactionsWithOneAway: number
  joins: number
  restarts: number
  comebacks: number
  keys: number
}

/**
 * Plays one history. The replicas' partition groups are tracked here
 * (group 0 or 1 per replica); after each step every group of online
 * replicas is given time to settle on the model's state for it.
 */
interface History { n: number, first: ModelOp[], steps: Step[], last: ModelOp, seed: number }

async function play ({ n, first, steps, last, seed }: History, stats: Stats): Promise<void> {
  stats.runs++
  if (steps.length >= MIN_STEPS) stats.long++
  const dir = await tempDir('compaction-property')
  const net = new TestNetwork({
    seed,
    announcers: true,
    init: {
      compaction: { interval: 0, membershipWindow: MEMBERSHIP_WINDOW },
      rebroadcastInterval: REBROADCAST,
      repairInterval: 100,
      dagSyncerTimeout: 1000
    }
  })
  // the model has one slot per replica, and one for the union of all
  const model = new CRDTModel(MAX_REPLICAS + 1)
  const group: number[] = []
  const online = (): number[] => net.replicas.filter(r => r.online).map(r => r.index)
  const pick = (r: number): number => { const list = online(); return list[r % list.length] }
  const applyGroups = (): void => {
    net.partition(...[0, 1].map(g => net.replicas.map(r => r.index).filter(i => group[i] === g)))
  }

  /** Waits until every online replica shows the model's state for its group, then asserts it */
  const settle = async (what: string): Promise<void> => {
    for (const g of [0, 1]) {
      const members = online().filter(i => group[i] === g)
      for (const a of members) for (const b of members) if (a !== b) model.sync(a, b)
    }
    // equal states do not show that a write arrived (it may change nothing visible, and the model
    // then counts it as seen by a later delete): each group must also agree on its heads
    const headsOf = (i: number): string => net.replicas[i].store.heads().map(h => `${h.cid}@${h.height}`).sort().join(' ')
    const sameHeads = (): boolean => [0, 1].every(g => new Set(online().filter(i => group[i] === g).map(headsOf)).size <= 1)
    const deadline = Date.now() + 10_000
    for (let round = 0; round < 10_000; round++) {
      const states = await Promise.all(online().map(async i => stateOf(net.replicas[i].store)))
      if (online().every((i, k) => JSON.stringify(states[k]) === JSON.stringify(model.state(i))) && sameHeads()) break
      if (Date.now() > deadline) break
      await new Promise(resolve => setTimeout(resolve, 15))
    }
    for (const i of online()) {
      expect(await stateOf(net.replicas[i].store), `replica ${i} after ${what} (network seed ${seed})`).to.deep.equal(model.state(i))
    }
    if (!sameHeads() && DUMP) process.stderr.write(await dumpHeads(net, online(), what))
    for (const g of [0, 1]) {
      const members = online().filter(i => group[i] === g)
      for (const i of members) expect(headsOf(i) === headsOf(members[0]), `heads of replica ${i} [${headsOf(i)}] against replica ${members[0]} [${headsOf(members[0])}] after ${what} (network seed ${seed})`).to.equal(true)
    }
  }

  const doWrite = async (r: number, ops: ModelOp[]): Promise<void> => {
    const before = model.state(r).map(e => e.slice(0, e.indexOf('=')))
    if (ops.some(op => op.value == null && before.includes(op.key))) stats.deletes++
    stats.writes++
    model.write(r, ops)
    await write(net.replicas[r].store, ops)
  }

  /** One generated step (replica numbers are taken modulo the replicas there are) */
  const runStep = async (step: Step): Promise<void> => {
    switch (step.kind) {
      case 'write': {
        const r = pick(step.r)
        await doWrite(r, step.ops)
        break
      }
      case 'partition':
        for (const r of net.replicas) group[r.index] = (step.mask >> r.index) & 1
        applyGroups()
        break
      case 'heal':
        for (const r of net.replicas) group[r.index] = 0
        applyGroups()
        break
      case 'compact': {
        const r = pick(step.r)
        const store = net.replicas[r].store
        // a compaction waits for the known replicas to pass the snapshot (they hear it at the
        // next rebroadcast) or to drop out of the membership window: bounded retries
        const away = net.replicas.some(o => o.index !== r && (!o.online || group[o.index] !== group[r]))
        for (let i = 0; i < 30; i++) {
          // a walk still unfinished here (a replica back from away) refuses a snapshot: a legitimate outcome
          const result = await store.compact().catch((err: Error) => {
            if (err.name !== 'SnapshotNotReadyError') throw err
            return undefined
          })
          if (result == null) break
          // the snapshot is a removal of the values overwritten in what r has merged
          if (i === 0) model.snapshot(r)
          if (result.removed.blocks > 0) {
            stats.compactions++
            stats.removedBlocks += result.removed.blocks
            if (away) stats.compactionsWithOneAway++
          }
          if (result.waiting == null) break
          await new Promise(resolve => setTimeout(resolve, 20))
        }
        break
      }
      case 'stop': {
        const r = pick(step.r)
        // one replica stays up
        if (online().length > 1) await (step.crash ? net.crashReplica(r) : net.stopReplica(r))
        break
      }
      case 'restart': {
        const r = step.r % net.replicas.length
        if (net.replicas[r].online) await net.stopReplica(r)
        else stats.comebacks++
        stats.restarts++
        await net.reopen(r)
        break
      }
      case 'join':
        if (net.replicas.length < MAX_REPLICAS) {
          stats.joins++
          group.push(0)
          await net.add({ dir: `${dir.path}/r${net.replicas.length}` })
          applyGroups()
        }
        break
      // no default
    }
  }

  try {
    for (let i = 0; i < n; i++) {
      await net.add({ dir: `${dir.path}/r${i}` })
      group.push(0)
    }
    for (let i = 0; i < n; i++) {
      await doWrite(i, [first[i]])
      await settle(`first put on ${i}`)
    }
    for (const step of steps) {
      await runStep(step)
      await settle(JSON.stringify(step))
    }

    // everyone back, one network; then a write nobody saw before
    for (const r of net.replicas) {
      if (!r.online) {
        stats.comebacks++
        await net.reopen(r.index)
      }
    }
    for (const r of net.replicas) group[r.index] = 0
    applyGroups()
    await settle('healing')
    await doWrite(0, [last])
    await settle('the last put')
    for (const r of net.replicas) model.sync(r.index, MAX_REPLICAS)
    const expected = model.state(MAX_REPLICAS)
    expect(expected, 'the merged state').to.not.deep.equal([])
    stats.keys += expected.length
    for (const r of net.replicas) {
      expect(await stateOf(r.store), `replica ${r.index} at the end (network seed ${seed})`).to.deep.equal(expected)
    }
  } finally {
    await net.stop()
    await dir.remove()
  }
}

/** Time a run may take at most, for the test's timeout (a run takes 1-5 s; more with COMPACTION_PROPERTY_RUNS) */
const RUN_TIMEOUT = 15_000

describe('bounded history under fast-check', function () {
  this.timeout(Math.max(120_000, RUNS * RUN_TIMEOUT))

  it('histories with compactions, partitions, restarts, replicas away and a late joiner end with every replica equal to the reference model', async () => {
    const stats: Stats = { runs: 0, long: 0, writes: 0, deletes: 0, compactions: 0, removedBlocks: 0, compactionsWithOneAway: 0, joins: 0, restarts: 0, comebacks: 0, keys: 0 }
    await fc.assert(fc.asyncProperty(historyArb, async history => { await play(history, stats) }), {
      numRuns: RUNS,
      seed: SEED,
      // a failing run waits out its settle timeouts, so shrinking would outlast the test's
      // timeout: report the first counterexample as it is (replay it with its seed and path)
      endOnFailure: true,
      examples: [
        // the regression below, played over the network: two puts on one replica, a compaction, a delete
        [{
          n: 2,
          first: [{ key: '/a', value: 'x' }, { key: '/b', value: 'x' }, { key: '/a', value: 'x' }, { key: '/a', value: 'x' }],
          steps: [{ kind: 'write', r: 0, ops: [{ key: '/a', value: 'y' }] }, { kind: 'compact', r: 0 }, { kind: 'write', r: 0, ops: [{ key: '/a' }] }, { kind: 'restart', r: 1 }],
          last: { key: '/😀', value: '' },
          seed: 1
        }],
        // a replica away while the key it holds is deleted and the history compacted: back, it
        // catches up from the snapshot, whose tombstone must delete its copy
        [{
          n: 2,
          first: [{ key: '/a', value: 'x' }, { key: '/b', value: 'y' }, { key: '/a', value: 'x' }, { key: '/a', value: 'x' }],
          steps: [{ kind: 'stop', r: 1, crash: false }, { kind: 'write', r: 0, ops: [{ key: '/a' }] }, { kind: 'write', r: 0, ops: [{ key: '/ü', value: 'ü' }] }, { kind: 'compact', r: 0 }, { kind: 'restart', r: 1 }],
          last: { key: '/日本', value: '' },
          seed: 3
        }],
        // a replica away with a write of its own while the others compact, then a late joiner
        [{
          n: 3,
          first: [{ key: '/a', value: 'x' }, { key: '/b', value: 'y' }, { key: '/ü', value: '' }, { key: '/a', value: 'x' }],
          steps: [{ kind: 'partition', mask: 4 }, { kind: 'write', r: 2, ops: [{ key: '/b' }, { key: '/e\u0301', value: 'ü' }] }, { kind: 'stop', r: 2, crash: true }, { kind: 'write', r: 0, ops: [{ key: '/a', value: 'y' }] }, { kind: 'compact', r: 1 }, { kind: 'compact', r: 0 }, { kind: 'join' }, { kind: 'heal' }, { kind: 'restart', r: 2 }],
          last: { key: '/日本', value: 'x' },
          seed: 2
        }]
      ]
    })
    if (process.env.PROPERTY_STATS != null) process.stdout.write(`${JSON.stringify(stats)}\n`)
    // what the histories reached: a generator that never compacts, never has a replica away,
    // or only writes to empty keys fails here
    expect(stats.runs).to.be.at.least(RUNS)
    expect(stats.long, 'long histories').to.be.at.least(RANDOM_RUNS)
    expect(stats.deletes, 'deletes of a present key').to.be.greaterThan(0)
    expect(stats.compactions, 'compactions that removed blocks').to.be.greaterThan(0)
    expect(stats.compactionsWithOneAway, 'compactions while a replica was away').to.be.greaterThan(0)
    expect(stats.joins, 'late joiners').to.be.greaterThan(0)
    expect(stats.comebacks, 'replicas back after a stop').to.be.greaterThan(0)
    expect(stats.keys / stats.runs, 'keys in the merged state').to.be.at.least(1)
  })

  it('a delete on a replica that compacted removes the key on replicas that did not, once each has passed the snapshot, before or after the delete arrived (regression: the overwritten value came back there)', async () => {
    const a = await memoryReplica()
    const b = await memoryReplica()
    const c = await memoryReplica()
    try {
      await a.store.put(new Key('/k'), enc('v1'))
      await a.store.put(new Key('/k'), enc('v2'))
      await syncReplica(a, b)
      await syncReplica(a, c)
      // no known replica here (no broadcaster): a compacts at once and forgets v1
      const result = await a.store.compact()
      expect(result.removed.blocks).to.equal(1)
      expect(result.removed.entries).to.equal(1)
      // b passes the snapshot before the delete (installing it is passing it for a replica with history)
      await syncReplica(a, b)
      await b.store.installSnapshot(result.snapshot)
      await a.store.delete(new Key('/k'))
      await syncReplica(a, b)
      await syncReplica(a, c)
      expect(await stateOf(a.store)).to.deep.equal([])
      expect(await stateOf(b.store)).to.deep.equal([])
      // c passes it after: v1 showed until then
      expect(await stateOf(c.store)).to.deep.equal(['/k=v1'])
      await c.store.installSnapshot(result.snapshot)
      expect(await stateOf(c.store)).to.deep.equal([])
    } finally {
      await a.store.stop()
      await b.store.stop()
      await c.store.stop()
    }
  })
})

describe('bounded history: histories random runs failed on (played as they were found)', function () {
  this.timeout(60_000)
  const none = (): Stats => ({ runs: 0, long: 0, writes: 0, deletes: 0, compactions: 0, removedBlocks: 0, compactionsWithOneAway: 0, joins: 0, restarts: 0, comebacks: 0, keys: 0 })

  it('a replica back from away whose head only deletes ends with the same heads as the others (regression: the install could not reach that head through compacted history and it stayed an extra head)', async () => {
    await play({
      n: 2,
      first: [{ key: '/é', value: '😀' }, { key: '/b/c', value: 'ü' }, { key: '/ü', value: '' }, { key: '/a', value: '' }],
      steps: [
        { kind: 'write', r: 4, ops: [{ key: '/b/c' }, { key: '/日本' }, { key: '/a' }, { key: '/😀' }] },
        { kind: 'stop', r: 2, crash: false },
        { kind: 'write', r: 1, ops: [{ key: '/é', value: '' }] },
        { kind: 'write', r: 0, ops: [{ key: '/😀', value: 'ü' }] },
        { kind: 'heal' },
        { kind: 'compact', r: 0 },
        { kind: 'restart', r: 0 },
        { kind: 'write', r: 0, ops: [{ key: '/b/c', value: 'ü' }] },
        { kind: 'compact', r: 2 },
        { kind: 'write', r: 2, ops: [{ key: '/b/c', value: '😀' }, { key: '/a', value: 'y' }, { key: '/b', value: 'é' }] },
        { kind: 'heal' },
        { kind: 'stop', r: 1, crash: false }
      ],
      last: { key: '/日本', value: 'ü' },
      seed: 141479824
    }, none())
  })

  it('a late joiner whose peers announce a snapshot only its partitioned maker held installs one it can fetch, and its delete removes the older value everywhere (regression: replicas announced snapshots whose chunks they never fetched; the joiner walked into compacted history instead and lacked the older element)', async () => {
    await play({
      n: 3,
      first: [{ key: '/日本', value: '' }, { key: '/b', value: '' }, { key: '/ü', value: '😀' }, { key: '/b', value: 'y' }],
      steps: [
        { kind: 'partition', mask: 17 },
        { kind: 'write', r: 4, ops: [{ key: '/a', value: 'x' }] },
        { kind: 'write', r: 4, ops: [{ key: '/é', value: '' }] },
        { kind: 'compact', r: 2 },
        { kind: 'join' },
        { kind: 'compact', r: 3 },
        { kind: 'partition', mask: 21 },
        { kind: 'write', r: 4, ops: [{ key: '/日本' }] },
        { kind: 'heal' },
        { kind: 'write', r: 0, ops: [{ key: '/a', value: 'é' }] },
        { kind: 'compact', r: 1 },
        { kind: 'compact', r: 1 },
        { kind: 'write', r: 3, ops: [{ key: '/b', value: '😀' }] },
        { kind: 'write', r: 1, ops: [{ key: '/😀', value: '' }, { key: '/日本' }, { key: '/😀', value: 'y' }] },
        { kind: 'compact', r: 1 },
        { kind: 'write', r: 0, ops: [{ key: '/a', value: 'é' }] },
        { kind: 'write', r: 4, ops: [{ key: '/é', value: '😀' }] },
        { kind: 'write', r: 4, ops: [{ key: '/é' }] },
        { kind: 'partition', mask: 7 },
        { kind: 'write', r: 2, ops: [{ key: '/a', value: 'x' }, { key: '/日本', value: '' }, { key: '/a', value: '' }] },
        { kind: 'write', r: 3, ops: [{ key: '/日本' }, { key: '/a' }, { key: '/ü', value: 'ü' }] },
        { kind: 'join' },
        { kind: 'join' },
        { kind: 'stop', r: 0, crash: true },
        { kind: 'write', r: 3, ops: [{ key: '/ü' }] }
      ],
      last: { key: '/b/c', value: 'é' },
      seed: 1595504294
    }, none())
  })
})
