/**
 * Unit spec of the DAG walker (src/engine/walker.ts) with a real engine over
 * memory stores: a walk fetches and merges every node below its starts and
 * releases what it reserved; a branch whose block is missing is counted
 * against and the walk rejects with the first error after finishing the
 * others; a malformed block is given up and does not fail the walk; an
 * aborted walk counts nothing; the children of one node share one fetch
 * deadline; a failing session falls back to the plain blockstore for the
 * rest of the walk; `preferPeer` reaches the block getter.
 */

import { logger } from '@libp2p/logger'
import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { MemoryDatastore } from 'datastore-core'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { blockKey } from '../src/codec/block-key.js'
import { encodeNode } from '../src/codec/dag-node.js'
import { Layout } from '../src/crdt/layout.js'
import { Engine } from '../src/engine/engine.js'
import { Walker } from '../src/engine/walker.js'
import type { Delta } from '../src/codec/delta.js'
import type { FetchOptions } from '../src/engine/engine.js'
import type { DAGBlockstore } from '../src/interfaces.js'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const dec = (b: Uint8Array): string => new TextDecoder().decode(b)

function delta (priority: number, puts: Array<[string, string]>): Delta {
  return { priority, dagName: '', elements: puts.map(([key, value]) => ({ key, id: '', value: enc(value) })), tombstones: [] }
}

/** A clock the deadline specs move by hand (stands in for `Date.now`) */
const clock = { now: 0 }

/** Serves the blocks it holds to a walker; records what was asked and how */
class Source implements DAGBlockstore {
  readonly blocks = new MemoryBlockstore()
  readonly asked: Array<{ cid: string, preferPeer?: string, probe?: boolean }> = []
  /** blocks that fail with an error when fetched */
  readonly broken = new Set<string>()
  /** how far a fetch of each block moves `clock` (ms) */
  readonly cost = new Map<string, number>()
  /** blocks held back until enough of their group are asked for at once (see `together`) */
  readonly gates = new Map<string, () => Promise<void>>()
  /** gated blocks that arrive when their gate opens even past their deadline */
  readonly patient = new Set<string>()
  /** whether the blocks held are at hand locally (a run merges them without a fetch) */
  local = false

  async * get (cid: CID, options?: FetchOptions): AsyncGenerator<Uint8Array> {
    this.asked.push({ cid: cid.toString(), preferPeer: options?.preferPeer, ...(options?.probe === true ? { probe: true } : {}) })
    clock.now += this.cost.get(cid.toString()) ?? 0
    const gate = this.gates.get(cid.toString())
    if (gate != null && this.patient.has(cid.toString())) {
      await gate()
    } else if (gate != null) {
      await Promise.race([gate(), new Promise((resolve, reject) => {
        options?.signal?.addEventListener('abort', () => { reject(new Error('gave up waiting')) })
      })])
    }
    if (this.broken.has(cid.toString())) throw new Error('broken source')
    if (!(await this.blocks.has(cid))) {
      // a block nobody has: wait for the deadline
      await new Promise((resolve, reject) => {
        options?.signal?.addEventListener('abort', () => { reject(new Error('gave up waiting')) })
      })
    }
    yield * this.blocks.get(cid)
  }

  put (cid: CID, bytes: Uint8Array): unknown { return this.blocks.put(cid, bytes) }
  /** Unless `local`, the network: nothing is at hand locally, every block is fetched (so runs merge one node each) */
  async has (cid?: CID): Promise<boolean> { return this.local && cid != null && this.blocks.has(cid) }

  /**
   * Holds the fetches of `cids` until `n` of them are asked for at the same
   * time (or their deadline ends them): a walk that never has `n` fetches of
   * them in flight fails them
   */
  together (cids: CID[], n: number): void {
    let asked = 0
    let open: () => void = () => {}
    const opened = new Promise<void>(resolve => { open = resolve })
    for (const cid of cids) {
      this.gates.set(cid.toString(), async () => {
        if (++asked >= n) open()
        await opened
      })
    }
  }
}

describe('Walker', () => {
  let source: Source
  let engine: Engine
  let ds: MemoryDatastore
  let timeouts: Array<number | undefined>

  function makeWalker (blockstore: DAGBlockstore = source, init: { numWorkers?: number, dagSyncerTimeout?: number } = {}): Walker {
    return new Walker({ engine, blockstore, log: logger('test:walker'), numWorkers: init.numWorkers ?? 4, dagSyncerTimeout: init.dagSyncerTimeout ?? 200 })
  }

  beforeEach(async () => {
    source = new Source()
    ds = new MemoryDatastore()
    engine = new Engine({
      datastore: ds,
      blockstore: source,
      layout: new Layout('/ns'),
      log: logger('test:walker'),
      dagSyncerTimeout: 200,
      maxBlockSize: 1024 * 1024,
      maxFetchAttempts: 2,
      onChanges: () => {}
    })
    await engine.heads.load()
    timeouts = []
    const fetchNode = engine.fetchNode.bind(engine)
    engine.fetchNode = async (cid, getter, options) => {
      timeouts.push(options?.timeout)
      return fetchNode(cid, getter, options)
    }
  })

  /** Stores a node in the source and returns its CID */
  async function add (d: Delta, links: CID[] = [], store = true): Promise<CID> {
    const { cid, bytes } = await encodeNode(d, links)
    if (store) await source.put(cid, bytes)
    return cid
  }

  async function value (key: string): Promise<string | undefined> {
    return await engine.set.has(key) ? dec(await engine.set.get(key)) : undefined
  }

  async function start (cid: CID): Promise<{ cid: CID }> {
    await engine.addRoot(cid)
    expect(engine.reserve(cid)).to.be.true()
    return { cid }
  }

  it('walks a DAG from its head, merging every node and leaving no reservation or record', async () => {
    const a = await add(delta(1, [['/a', '1']]))
    const b = await add(delta(1, [['/b', '1']]))
    const c = await add(delta(2, [['/c', '1']]), [a, b])
    const d = await add(delta(3, [['/a', '2']]), [c])
    const walker = makeWalker()
    let during = -1
    const walking = walker.walk([await start(d)])
    during = walker.walks
    await walking
    expect(during).to.equal(1)
    expect(walker.walks).to.equal(0)
    expect(walker.queued).to.equal(0)
    expect(await value('/a')).to.equal('2')
    expect(await value('/b')).to.equal('1')
    expect(await value('/c')).to.equal('1')
    for (const cid of [a, b, c, d]) {
      expect(await engine.isProcessed(cid)).to.be.true()
      expect(engine.reserve(cid)).to.be.true()
    }
    expect(await engine.pendingBranches()).to.deep.equal([])
    expect(engine.heads.list('').map(h => h.cid.toString())).to.deep.equal([d.toString()])
    // each block fetched once
    expect(source.asked.map(x => x.cid).sort()).to.deep.equal([a, b, c, d].map(String).sort())
  })

  it('an empty walk does nothing', async () => {
    const walker = makeWalker()
    await walker.walk([])
    expect(source.asked).to.deep.equal([])
  })

  it('a start node already fetched is merged without a fetch', async () => {
    const a = await add(delta(1, [['/a', '1']]))
    const { cid, bytes } = await encodeNode(delta(2, [['/b', '1']]), [a])
    const { decodeNode } = await import('../src/codec/dag-node.js')
    const walker = makeWalker()
    await walker.walk([{ ...await start(cid), node: decodeNode(cid, bytes) }])
    expect(source.asked.map(x => x.cid)).to.deep.equal([a.toString()])
    expect(await value('/b')).to.equal('1')
  })

  it('a missing block fails the walk after the other branches, counts against the branch and finally gives it up', async () => {
    const missing = await add(delta(1, [['/m', '1']]), [], false)
    const ok = await add(delta(1, [['/ok', '1']]))
    const top = await add(delta(2, [['/t', '1']]), [missing, ok])
    const walker = makeWalker(source, { dagSyncerTimeout: 50 })
    const err = await walker.walk([await start(top)]).then(() => undefined, (e: Error) => e)
    expect(err).to.have.property('name', 'BlockFetchError')
    expect(await value('/ok')).to.equal('1')
    expect(await value('/t')).to.equal('1')
    expect(await engine.isPending(missing)).to.be.true()
    expect([...await ds.get(engine.layout.pendingKey(blockKey(missing)))]).to.deep.equal([0, 1, 1])
    expect(engine.reserve(missing)).to.be.true()
    engine.release(missing)

    // the second failure reaches maxFetchAttempts (2): given up
    expect(engine.reserve(missing)).to.be.true()
    await expect(walker.walk([{ cid: missing }])).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
    expect(await engine.isPending(missing)).to.be.false()
    expect((await engine.givenUp()).map(g => g.cid.toString())).to.deep.equal([missing.toString()])
  })

  it('a malformed block is given up and does not fail the walk', async () => {
    const junk = enc('not a node')
    const bad = CID.createV1(0x70, await sha256.digest(junk))
    await source.blocks.put(bad, junk)
    const top = await add(delta(2, [['/t', '1']]), [bad])
    const walker = makeWalker()
    await walker.walk([await start(top)])
    expect(await value('/t')).to.equal('1')
    const given = await engine.givenUp()
    expect(given.map(g => g.cid.toString())).to.deep.equal([bad.toString()])
    expect(given[0].reason).to.match(/^malformed block \(Malformed\w+Error\)$/)
    expect(engine.reserve(bad)).to.be.true()
  })

  it('a failure other than a fetch (the datastore refusing a commit) fails the walk without counting against the branch', async () => {
    const top = await add(delta(1, [['/t', '1']]))
    await engine.addRoot(top)
    const batch = ds.batch.bind(ds)
    ds.batch = () => {
      const b = batch()
      return { put: b.put.bind(b), delete: b.delete.bind(b), commit: async () => { throw Object.assign(new Error('disk full'), { name: 'IOError' }) } }
    }
    engine.reserve(top)
    await expect(makeWalker().walk([{ cid: top }])).to.eventually.be.rejected.with.property('name', 'IOError')
    ds.batch = batch
    expect([...await ds.get(engine.layout.pendingKey(blockKey(top)))]).to.deep.equal([1])
    expect(await engine.isProcessed(top)).to.be.false()
    expect(engine.reserve(top)).to.be.true()
  })

  it('an aborted walk rejects and counts no failed fetch', async () => {
    const missing = await add(delta(1, [['/m', '1']]), [], false)
    const ok = await add(delta(1, [['/ok', '1']]))
    const top = await add(delta(2, [['/t', '1']]), [missing, ok])
    const walker = makeWalker(source, { dagSyncerTimeout: 0 })
    const controller = new AbortController()
    setTimeout(() => { controller.abort() }, 50)
    await expect(walker.walk([await start(top)], { signal: controller.signal })).to.eventually.be.rejected()
    // `ok` allowed top's claim, so top merged while its other link was still asked for
    expect(await value('/t')).to.equal('1')
    expect([...await ds.get(engine.layout.pendingKey(blockKey(missing)))]).to.deep.equal([0])
    expect(await engine.givenUp()).to.deep.equal([])
    expect(walker.walks).to.equal(0)
  })

  it('a node waits for the links that decide its priority: merged once they arrive, its record kept and counted while they do not', async () => {
    const missing = await add(delta(1, [['/m', '1']]), [], false)
    const top = await add(delta(2, [['/t', '1']]), [missing])
    const walker = makeWalker(source, { dagSyncerTimeout: 50 })
    await expect(walker.walk([await start(top)])).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
    // not merged: its ROOT record stays, with one failed fetch really asked; the link has no record
    expect(await value('/t')).to.be.undefined()
    expect([...await ds.get(engine.layout.pendingKey(blockKey(top)))]).to.deep.equal([1, 1, 1])
    expect(await engine.isPending(missing)).to.be.false()
    expect(engine.reserve(top)).to.be.true()
    engine.release(top)
    // the link arrives: the repair's walk merges both, the link fetched once
    const { cid, bytes } = await encodeNode(delta(1, [['/m', '1']]), [])
    expect(cid.toString()).to.equal(missing.toString())
    await source.put(cid, bytes)
    source.asked.length = 0
    await walker.walk([await start(top)])
    expect(await value('/t')).to.equal('1')
    expect(await value('/m')).to.equal('1')
    expect(source.asked.map(x => x.cid)).to.deep.equal([top, missing].map(String))
    expect(await engine.pendingBranches()).to.deep.equal([])
    // given up with its link after maxFetchAttempts (2)
    const lost = await add(delta(1, [['/l', '1']]), [], false)
    const waiting = await add(delta(2, [['/w', '1']]), [lost])
    for (let i = 0; i < 2; i++) await expect(walker.walk([await start(waiting)])).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
    expect((await engine.givenUp()).map(g => g.cid.toString())).to.deep.equal([waiting.toString()])
  })

  it('the children of one node share one deadline; with dagSyncerTimeout 0 they wait forever', async () => {
    const kids = await Promise.all([1, 2, 3].map(async i => add(delta(1, [[`/k${i}`, '1']]))))
    const top = await add(delta(2, [['/t', '1']]), kids)
    await makeWalker(source, { dagSyncerTimeout: 10_000, numWorkers: 1 }).walk([await start(top)])
    // the start node and each child get what is left of the shared deadline: at most the full timeout, never 0 (forever)
    expect(timeouts).to.have.length(4)
    for (const t of timeouts) {
      expect(t).to.be.a('number')
      expect(t).to.be.greaterThan(0)
      expect(t).to.be.at.most(10_000)
    }

    timeouts = []
    const other = await add(delta(1, [['/o', '1']]))
    const top2 = await add(delta(2, [['/t2', '1']]), [other])
    await makeWalker(source, { dagSyncerTimeout: 0 }).walk([await start(top2)])
    expect(timeouts).to.deep.equal([0, 0])
  })

  it('siblings whose shared deadline ran out fail without being asked for', async () => {
    const missing = await Promise.all([1, 2, 3].map(async i => add(delta(1, [[`/m${i}`, '1']]), [], false)))
    // `ok` allows the top's claim, so it is merged and the missing links become branches of their own
    const ok = await add(delta(1, [['/ok', '1']]))
    const top = await add(delta(2, [['/t', '1']]), [ok, ...missing])
    // one worker: the siblings are fetched one after another, the first uses up the deadline
    const walker = makeWalker(source, { dagSyncerTimeout: 50, numWorkers: 1 })
    await expect(walker.walk([await start(top)])).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
    const askedMissing = source.asked.filter(x => missing.some(m => m.toString() === x.cid))
    expect(askedMissing).to.have.length(1)
    // each counts a failed fetch; only the one asked counts an ask
    for (const m of missing) {
      const wasAsked = askedMissing[0].cid === m.toString() ? 1 : 0
      expect([...await ds.get(engine.layout.pendingKey(blockKey(m)))]).to.deep.equal([0, 1, wasAsked])
    }
  })

  it('a failing session falls back to the blockstore for the rest of the walk', async () => {
    const a = await add(delta(1, [['/a', '1']]))
    const b = await add(delta(2, [['/b', '1']]), [a])
    const top = await add(delta(3, [['/t', '1']]), [b])
    let sessionGets = 0
    const roots: string[] = []
    const withSession: DAGBlockstore = {
      get: (cid, options) => source.get(cid, options),
      put: (cid, bytes) => source.put(cid, bytes),
      has: async () => source.has(),
      createSession: (root) => {
        roots.push(root.toString())
        return {
          // eslint-disable-next-line require-yield -- a getter that fails before its first chunk
          get: async function * (): AsyncGenerator<Uint8Array> { sessionGets++; throw new Error('session lost its peers') }
        }
      }
    }
    await makeWalker(withSession).walk([await start(top)])
    expect(roots).to.deep.equal([top.toString()])
    expect(sessionGets).to.equal(1)
    expect(await value('/a')).to.equal('1')
    expect(source.asked.map(x => x.cid)).to.deep.equal([top, b, a].map(String))
  })

  it('a session that works is used for every fetch; one that cannot be made is skipped', async () => {
    const a = await add(delta(1, [['/a', '1']]))
    const top = await add(delta(2, [['/t', '1']]), [a])
    let sessionGets = 0
    const good: DAGBlockstore = {
      get: () => { throw new Error('not the session') },
      put: (cid, bytes) => source.put(cid, bytes),
      has: async () => source.has(),
      createSession: () => ({ get: (cid: CID, options?: FetchOptions) => { sessionGets++; return source.get(cid, options) } })
    }
    await makeWalker(good).walk([await start(top)])
    expect(sessionGets).to.equal(2)

    const b = await add(delta(3, [['/b', '1']]), [top])
    const noSession: DAGBlockstore = {
      get: (cid, options) => source.get(cid, options),
      put: (cid, bytes) => source.put(cid, bytes),
      has: async () => source.has(),
      createSession: () => { throw new Error('no providers') }
    }
    await makeWalker(noSession).walk([await start(b)])
    expect(await value('/b')).to.equal('1')
  })

  it('a session fetch that fails for another reason than fetching is not retried', async () => {
    const junk = enc('junk')
    const cid = CID.createV1(0x70, await sha256.digest(junk))
    let plain = 0
    const bs: DAGBlockstore = {
      get: function * () { plain++; yield junk },
      put: () => {},
      has: () => false,
      createSession: () => ({ get: function * () { yield junk } })
    }
    await engine.addRoot(cid)
    engine.reserve(cid)
    await makeWalker(bs).walk([{ cid }])
    expect(plain).to.equal(0)
    expect((await engine.givenUp()).map(g => g.cid.toString())).to.deep.equal([cid.toString()])
  })

  it('preferPeer reaches the block getter', async () => {
    const a = await add(delta(1, [['/a', '1']]))
    const top = await add(delta(2, [['/t', '1']]), [a])
    await makeWalker().walk([await start(top)], { preferPeer: 'peer-7' })
    expect(source.asked.map(x => x.preferPeer)).to.deep.equal(['peer-7', 'peer-7'])
  })

  it('walks side by side complete, and each fetches its own branch', async () => {
    const leftLeaf = await add(delta(1, [['/l', '1']]))
    const left = await add(delta(2, [['/l2', '1']]), [leftLeaf])
    const rightLeaf = await add(delta(1, [['/r', '1']]))
    const right = await add(delta(2, [['/r2', '1']]), [rightLeaf])
    const walker = makeWalker(source, { numWorkers: 2 })
    const walks = [walker.walk([await start(left)]), walker.walk([await start(right)])]
    expect(walker.walks).to.equal(2)
    await Promise.all(walks)
    expect(walker.walks).to.equal(0)
    for (const k of ['/l', '/l2', '/r', '/r2']) expect(await value(k)).to.equal('1')
    expect(engine.heads.count('')).to.equal(2)
  })

  it('nodes below a fetched one whose blocks are at hand are merged in its run, without a fetch', async () => {
    source.local = true
    const a = await add(delta(1, [['/a', '1']]))
    const b = await add(delta(2, [['/b', '1']]), [a])
    const top = await add(delta(3, [['/t', '1']]), [b])
    await makeWalker().walk([await start(top)])
    // one fetch (the start), then a and b read locally by the run
    expect(timeouts).to.have.length(1)
    for (const k of ['/a', '/b', '/t']) expect(await value(k)).to.equal('1')
    for (const cid of [a, b, top]) expect(await engine.isProcessed(cid)).to.be.true()
  })

  it('a fetch failing after the walk was aborted neither falls back from the session nor counts against the branch', async () => {
    const a = await add(delta(1, [['/a', '1']]))
    const top = await add(delta(2, [['/t', '1']]), [a])
    const controller = new AbortController()
    const withSession: DAGBlockstore = {
      get: (cid, options) => source.get(cid, options),
      put: (cid, bytes) => source.put(cid, bytes),
      has: async () => source.has(),
      createSession: () => ({
        // the walk is aborted while the block arrives, and it arrives corrupted (a fetch error)
        get: async function * (): AsyncGenerator<Uint8Array> { controller.abort(); yield enc('corrupted') }
      })
    }
    await expect(makeWalker(withSession).walk([await start(top)], { signal: controller.signal })).to.eventually.be.rejected()
    expect(source.asked).to.deep.equal([])
    expect([...await ds.get(engine.layout.pendingKey(blockKey(top)))]).to.deep.equal([1])
    expect(await engine.givenUp()).to.deep.equal([])
  })

  it('alone, a walk fetches with every worker', async () => {
    const kids = await Promise.all([1, 2].map(async i => add(delta(1, [[`/k${i}`, '1']]))))
    // priority 1: merged without fetching its links first, so the children are fetched by the walk's own queue
    const top = await add(delta(1, [['/t', '1']]), kids)
    // both children must be in flight at once, or they fail at the deadline
    source.together(kids, 2)
    await makeWalker(source, { numWorkers: 2, dagSyncerTimeout: 2000 }).walk([await start(top)])
    for (const k of [1, 2]) expect(await value(`/k${k}`)).to.equal('1')
  })

  it('beside another walk, a walk fetches with every worker but one', async () => {
    const held = await add(delta(1, [['/held', '1']]))
    const kids = await Promise.all([1, 2, 3].map(async i => add(delta(1, [[`/k${i}`, '1']]))))
    // priority 1: the children are fetched by the walk's queue, not as links its merge waits for
    const top = await add(delta(1, [['/t', '1']]), kids)
    let release: () => void = () => {}
    const released = new Promise<void>(resolve => { release = resolve })
    source.gates.set(held.toString(), async () => released)
    // however slow the machine, the other walk's block arrives only when released
    source.patient.add(held.toString())
    // three workers: the other walk holds one, so two of the children must be in flight at once
    source.together(kids, 2)
    const walker = makeWalker(source, { numWorkers: 3, dagSyncerTimeout: 2000 })
    const other = walker.walk([await start(held)])
    await walker.walk([await start(top)])
    expect(walker.walks).to.equal(1)
    for (const k of [1, 2, 3]) expect(await value(`/k${k}`)).to.equal('1')
    release()
    await other
    expect(await value('/held')).to.equal('1')
  })

  describe('fetch order and deadlines, on a clock moved by the fetches', () => {
    const realNow = Date.now

    beforeEach(() => {
      clock.now = 0
      Date.now = () => clock.now
    })

    afterEach(() => {
      Date.now = realNow
    })

    /** Stores a node whose fetch moves the clock by `cost` ms */
    async function addTimed (d: Delta, links: CID[], cost: number, store = true): Promise<CID> {
      const cid = await add(d, links, store)
      source.cost.set(cid.toString(), cost)
      if (!store) source.broken.add(cid.toString())
      return cid
    }

    it('takes deeper nodes first: a child\'s own children before its siblings', async () => {
      const a1 = await add(delta(1, [['/a1', '1']]))
      const b1 = await add(delta(1, [['/b1', '1']]))
      // priority 1 claims need no link read first (the priority check would otherwise fetch a node's links before its merge)
      const a = await add(delta(1, [['/a', '1']]), [a1])
      const b = await add(delta(1, [['/b', '1']]), [b1])
      const top = await add(delta(1, [['/t', '1']]), [a, b])
      // one worker: one fetch at a time, in the queue's order
      await makeWalker(source, { numWorkers: 1 }).walk([await start(top)])
      const asked = source.asked.map(x => x.cid)
      expect(asked).to.have.length(5)
      expect(asked[0]).to.equal(top.toString())
      // whichever of a and b comes first, its child (one level deeper) comes before the other
      const below = new Map([[a.toString(), a1.toString()], [b.toString(), b1.toString()]])
      expect(below.has(asked[1])).to.be.true()
      expect(asked[2]).to.equal(below.get(asked[1]))
      expect(below.has(asked[3])).to.be.true()
      expect(asked[4]).to.equal(below.get(asked[3]))
    })

    it('each sibling that arrives pushes the shared deadline back to a full dagSyncerTimeout', async () => {
      const kids = await Promise.all([1, 2, 3].map(async i => addTimed(delta(1, [[`/k${i}`, '1']]), [], 400)))
      const top = await addTimed(delta(2, [['/t', '1']]), kids, 400)
      await makeWalker(source, { dagSyncerTimeout: 1000, numWorkers: 1 }).walk([await start(top)])
      // each fetch takes 400 ms: without the push back the siblings would get 1000, 600 and 200
      expect(timeouts).to.deep.equal([1000, 1000, 1000, 1000])
      for (const k of [1, 2, 3]) expect(await value(`/k${k}`)).to.equal('1')
    })

    it('a sibling is asked while a tenth of the shared deadline is left, not once less is', async () => {
      const missing = await Promise.all([1, 2, 3, 4].map(async i => addTimed(delta(1, [[`/m${i}`, '1']]), [], 450, false)))
      // priority 1: merged without waiting for a link, so the siblings are fetched as a walk's next level
      const top = await addTimed(delta(1, [['/t', '1']]), missing, 0)
      const walker = makeWalker(source, { dagSyncerTimeout: 1000, numWorkers: 1 })
      await expect(walker.walk([await start(top)])).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
      // failures do not push the deadline back: 1000, 550, then exactly 100 (a tenth) left; then none
      expect(timeouts).to.deep.equal([1000, 1000, 550, 100])
      const askedMissing = source.asked.map(x => x.cid).filter(cid => missing.some(m => m.toString() === cid))
      expect(askedMissing).to.have.length(3)
      for (const m of missing) {
        const asked = askedMissing.includes(m.toString()) ? 1 : 0
        expect([...await ds.get(engine.layout.pendingKey(blockKey(m)))]).to.deep.equal([0, 1, asked])
      }
    })

    it('with dagSyncerTimeout 0 no fetch has a deadline, however long the siblings take', async () => {
      const kids = await Promise.all([1, 2, 3].map(async i => addTimed(delta(1, [[`/k${i}`, '1']]), [], 5000)))
      const top = await addTimed(delta(2, [['/t', '1']]), kids, 5000)
      await makeWalker(source, { dagSyncerTimeout: 0, numWorkers: 1 }).walk([await start(top)])
      expect(timeouts).to.deep.equal([0, 0, 0, 0])
      for (const k of [1, 2, 3]) expect(await value(`/k${k}`)).to.equal('1')

      // siblings that fail (and so push nothing back) are each asked all the same
      timeouts = []
      source.asked.length = 0
      const missing = await Promise.all([1, 2, 3].map(async i => addTimed(delta(1, [[`/m${i}`, '1']]), [], 5000, false)))
      const top2 = await addTimed(delta(4, [['/t2', '1']]), missing, 0)
      await expect(makeWalker(source, { dagSyncerTimeout: 0, numWorkers: 1 }).walk([await start(top2)])).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
      expect(timeouts).to.deep.equal([0, 0, 0, 0])
      expect(source.asked).to.have.length(4)
    })
  })

  describe('the fast sync\'s fetch errors, probes and hand-offs: edges a mutation run found', () => {
    const realNow = Date.now

    afterEach(() => {
      Date.now = realNow
    })

    /** A blockstore whose every fetch fails with the error `fail` makes (recorded in `source.asked`) */
    function failing (fail: () => Error): DAGBlockstore {
      return {
        // eslint-disable-next-line require-yield -- a getter that fails before its first chunk
        get: async function * (cid: CID): AsyncGenerator<Uint8Array> { source.asked.push({ cid: cid.toString() }); throw fail() },
        put: (cid, bytes) => source.put(cid, bytes),
        has: async () => false
      }
    }

    /** `err` wrapped in `levels` plain errors, each the cause of the next */
    function wrapped (err: Error, levels: number): Error {
      for (let i = 0; i < levels; i++) err = new Error(`wrapper ${i}`, { cause: err })
      return err
    }

    function noPeers (): Error {
      return Object.assign(new Error('no peer connected to ask'), { name: 'NoPeersAskedError' })
    }

    /** The `w/` record of a branch: [ROOT or COVERED, failed fetches, of those really asked] */
    async function record (cid: CID): Promise<number[]> {
      return [...await ds.get(engine.layout.pendingKey(blockKey(cid)))]
    }

    it('a fetch that found no peer to ask (NoPeersAskedError, up to three causes below the fetch error) never gives its branch up', async () => {
      const missing = await add(delta(1, [['/m', '1']]), [], false)
      // the fetch error's cause is the getter's error (1 level below), which wraps it twice more: 3 levels below
      const walker = makeWalker(failing(() => wrapped(noPeers(), 2)))
      for (let i = 0; i < 3; i++) {
        await expect(walker.walk([await start(missing)])).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
      }
      // counted, never as asked, and never past maxFetchAttempts - 1 (2): not given up
      expect(await record(missing)).to.deep.equal([1, 1, 0])
      expect(await engine.givenUp()).to.deep.equal([])
      expect(source.asked).to.have.length(3)
    })

    it('a NoPeersAskedError deeper than three causes below, or another error, is a fetch really asked', async () => {
      for (const fail of [() => wrapped(noPeers(), 3), () => new Error('no block here')]) {
        const missing = await add(delta(1, [['/m', String(source.asked.length)]]), [], false)
        const walker = makeWalker(failing(fail))
        await expect(walker.walk([await start(missing)])).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
        expect(await record(missing)).to.deep.equal([1, 1, 1])
        // the second asked failure reaches maxFetchAttempts (2)
        await expect(walker.walk([await start(missing)])).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
        expect((await engine.givenUp()).map(g => g.cid.toString())).to.include(missing.toString())
      }
    })

    it('the peers a fetch error (or a cause of it) names as refusers are kept with the branch given up; what is not a peer id is dropped', async () => {
      const cases: Array<{ fail(): Error, refusedBy?: string[] }> = [
        { fail: () => Object.assign(new Error('nobody had it'), { refusedBy: ['peer-a', 7, 'peer-b'] }), refusedBy: ['peer-a', 'peer-b'] },
        // the first level naming refusers wins
        { fail: () => new Error('outer', { cause: Object.assign(new Error('inner'), { refusedBy: ['peer-c'] }) }), refusedBy: ['peer-c'] },
        { fail: () => Object.assign(new Error('outer', { cause: Object.assign(new Error('inner'), { refusedBy: ['peer-e'] }) }), { refusedBy: ['peer-d'] }), refusedBy: ['peer-d'] },
        // not a list: no refusers known
        { fail: () => Object.assign(new Error('odd'), { refusedBy: 'peer-f' }) }
      ]
      for (const [i, { fail, refusedBy }] of cases.entries()) {
        const missing = await add(delta(1, [['/m', String(i)]]), [], false)
        const walker = makeWalker(failing(fail))
        for (let n = 0; n < 2; n++) {
          await expect(walker.walk([await start(missing)])).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
        }
        const given = (await engine.givenUp()).find(g => g.cid.equals(missing))
        expect(given, `case ${i}`).to.deep.equal({ cid: missing, reason: 'no block after 2 fetches', covered: false, ...(refusedBy == null ? {} : { refusedBy }) })
      }
    })

    it('a fetch error whose causes form a cycle is looked through a few levels only', async () => {
      const missing = await add(delta(1, [['/m', '1']]), [], false)
      const walker = makeWalker(failing(() => {
        const err = new Error('its own cause')
        Object.assign(err, { cause: err })
        return err
      }))
      await expect(walker.walk([await start(missing)])).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
      expect(await record(missing)).to.deep.equal([1, 1, 1])
    })

    /** Stores a node whose block is exactly `size` bytes (its value padded) */
    async function sized (d: Delta, links: CID[], size: number): Promise<CID> {
      let pad = size
      for (let tries = 0; tries < 8; tries++) {
        const padded = { ...d, elements: d.elements.map(e => ({ ...e, value: new Uint8Array(pad).fill(0x61) })) }
        const { cid, bytes } = await encodeNode(padded, links)
        if (bytes.byteLength === size) {
          await source.put(cid, bytes)
          return cid
        }
        pad += size - bytes.byteLength
      }
      throw new Error(`no node of ${size} bytes`)
    }

    it('the links a node waited for are handed on decoded up to 4 MiB of blocks, the rest fetched again when walked', async () => {
      const KiB = 1024
      const MiB = 1024 * KiB
      // handed on while they fit: 4 MiB - 2 KiB, the 4 KiB one does not fit, the 1 KiB ones do (the last to exactly 4 MiB)
      const sizes = [MiB, MiB, MiB, MiB - 2 * KiB, 4 * KiB, KiB]
      const leaves = []
      for (const [i, size] of sizes.entries()) leaves.push(await sized(delta(1, [[`/l${i}`, '']]), [], size))
      // the last link claims 2 (through a link to the first), which allows the top's 3: every link is fetched before the top merges
      const last = await sized(delta(2, [['/last', '']]), [leaves[0]], KiB)
      const top = await add(delta(3, [['/t', '1']]), [...leaves, last])
      // one worker: the links are fetched in their order
      await makeWalker(source, { numWorkers: 1, dagSyncerTimeout: 5000 }).walk([await start(top)])
      expect(await value('/t')).to.equal('1')
      for (const cid of [...leaves, last]) expect(await engine.isProcessed(cid)).to.be.true()
      const asked = source.asked.map(x => x.cid)
      expect(asked).to.deep.equal([top, ...leaves, last, leaves[4]].map(String))
    })

    it('a waiting node fails with the failure of a link really asked, even when one never asked failed first', async () => {
      clock.now = 0
      Date.now = () => clock.now
      const asked = await add(delta(1, [['/a', '1']]), [], false)
      const notAsked = await add(delta(1, [['/b', '1']]), [], false)
      for (const cid of [asked, notAsked]) source.broken.add(cid.toString())
      // `asked` takes 950 of the 1000 ms its links share and is held until released
      source.cost.set(asked.toString(), 950)
      let releaseAsked: () => void = () => {}
      const heldAsked = new Promise<void>(resolve => { releaseAsked = resolve })
      source.gates.set(asked.toString(), async () => heldAsked)
      source.patient.add(asked.toString())
      // another walk holds the second of two workers until `other` is released
      const held = await add(delta(1, [['/held', '1']]))
      let releaseOther: () => void = () => {}
      const heldOther = new Promise<void>(resolve => { releaseOther = resolve })
      source.gates.set(held.toString(), async () => heldOther)
      source.patient.add(held.toString())
      const top = await add(delta(3, [['/t', '1']]), [asked, notAsked])
      const walker = makeWalker(source, { numWorkers: 2, dagSyncerTimeout: 1000 })
      const other = walker.walk([await start(held)])
      const walk = walker.walk([await start(top)]).then(() => undefined, (err: Error) => err)
      // bounded: until `asked` is in flight
      for (let i = 0; i < 100 && !source.asked.some(x => x.cid === asked.toString()); i++) await new Promise(resolve => setImmediate(resolve))
      // the other walk's slot frees with 50 ms of the deadline left: `notAsked` fails unasked, before `asked` fails
      releaseOther()
      await other
      await new Promise(resolve => setImmediate(resolve))
      releaseAsked()
      const err = await walk
      expect(err).to.have.property('name', 'BlockFetchError')
      expect(err).to.have.property('message').that.includes(asked.toString()).and.includes('broken source')
      // counted against the top as a fetch really asked
      expect(await record(top)).to.deep.equal([1, 1, 1])
      expect(source.asked.map(x => x.cid)).to.not.include(notAsked.toString())
    })

    it('a run reads the blocks at hand through the walker\'s blockstore, not the engine\'s', async () => {
      const a = await add(delta(1, [['/a', '1']]))
      const b = await add(delta(2, [['/b', '1']]), [a])
      const top = await add(delta(3, [['/t', '1']]), [b])
      // the engine's blockstore (source) has nothing at hand; the walker's has every block
      const local: DAGBlockstore = {
        get: (cid, options) => source.get(cid, options),
        put: (cid, bytes) => source.put(cid, bytes),
        has: async (cid?: CID) => cid != null && source.blocks.has(cid)
      }
      await makeWalker(local).walk([await start(top)])
      expect(timeouts).to.have.length(1)
      for (const k of ['/a', '/b', '/t']) expect(await value(k)).to.equal('1')
    })

    it('a waiting node whose merge fails for another reason than its links rejects with that error, not a link\'s failure', async () => {
      const missing = await add(delta(1, [['/m', '1']]), [], false)
      source.broken.add(missing.toString())
      const ok = await add(delta(2, [['/ok', '1']]), [])
      // the failed link comes first; `ok` claims 2 (unchecked here), which allows the top's 3
      const top = await add(delta(3, [['/t', '1']]), [missing, ok])
      await engine.addRoot(top)
      engine.reserve(top)
      const batch = ds.batch.bind(ds)
      ds.batch = () => {
        const b = batch()
        return { put: b.put.bind(b), delete: b.delete.bind(b), commit: async () => { throw Object.assign(new Error('disk full'), { name: 'IOError' }) } }
      }
      await expect(makeWalker(source, { numWorkers: 1 }).walk([{ cid: top }])).to.eventually.be.rejected.with.property('name', 'IOError')
      ds.batch = batch
      // not counted against the top
      expect(await record(top)).to.deep.equal([1])
    })

    it('a walk aborted while a node waits for its links gives back only the slots it holds', async () => {
      const missing = await add(delta(1, [['/m', '1']]), [], false)
      source.broken.add(missing.toString())
      const top = await add(delta(2, [['/t', '1']]), [missing])
      const controller = new AbortController()
      // aborted while its link is fetched
      source.gates.set(missing.toString(), async () => { controller.abort() })
      source.patient.add(missing.toString())
      let inFlight = 0
      let most = 0
      const counting: DAGBlockstore = {
        get: async function * (cid: CID, options?: FetchOptions): AsyncGenerator<Uint8Array> {
          most = Math.max(most, ++inFlight)
          try {
            // a turn of the event loop, so fetches that may run together do
            await new Promise(resolve => setImmediate(resolve))
            yield * source.get(cid, options)
          } finally {
            inFlight--
          }
        },
        put: (cid, bytes) => source.put(cid, bytes),
        has: async () => false
      }
      const walker = makeWalker(counting, { numWorkers: 1 })
      await expect(walker.walk([await start(top)], { signal: controller.signal })).to.eventually.be.rejected()
      // one worker still: the two links of the next walk's node are fetched one at a time
      const kids = await Promise.all([1, 2].map(async i => add(delta(1, [[`/k${i}`, '1']]))))
      const top2 = await add(delta(2, [['/t2', '1']]), kids)
      await walker.walk([await start(top2)])
      expect(await value('/t2')).to.equal('1')
      expect(most).to.equal(1)
    })

    /** Holds the fetch of `cid` until the returned function is called */
    function hold (cid: CID): () => void {
      let release: () => void = () => {}
      const held = new Promise<void>(resolve => { release = resolve })
      source.gates.set(cid.toString(), async () => held)
      source.patient.add(cid.toString())
      return release
    }

    /** Turns of the event loop until `done`, 20 at most */
    async function until (done: () => Promise<boolean> | boolean): Promise<void> {
      for (let i = 0; i < 20 && !(await done()); i++) await new Promise(resolve => setImmediate(resolve))
    }

    it('a link whose claim does not allow the waiting node does not decide it: the node waits for the next', async () => {
      const low = await add(delta(1, [['/low', '1']]))
      const high = await add(delta(2, [['/high', '1']]), [low])
      const top = await add(delta(3, [['/t', '1']]), [low, high])
      const releaseHigh = hold(high)
      const walking = makeWalker(source, { numWorkers: 2, dagSyncerTimeout: 5000 }).walk([await start(top)])
      // `low` (claiming 1) arrived, `high` (2, which allows 3) is still on its way
      await until(() => source.asked.some(x => x.cid === high.toString()))
      await until(async () => engine.isProcessed(top))
      releaseHigh()
      await walking
      for (const k of ['/t', '/low', '/high']) expect(await value(k)).to.equal('1')
    })

    it('a link that arrives after the waiting node was decided is handed on when it is walked, not fetched again', async () => {
      const base = await add(delta(1, [['/base', '1']]))
      const high = await add(delta(2, [['/high', '1']]), [base])
      const walker = makeWalker(source, { numWorkers: 2, dagSyncerTimeout: 5000 })
      await walker.walk([await start(base)])
      const low = await add(delta(1, [['/low', '1']]))
      // `high` allows the top's 3 at once; `low` is held until the top's run merged it, and arrives before its children are walked
      const top = await add(delta(3, [['/t', '1']]), [high, low])
      const releaseLow = hold(low)
      const processRun = engine.processRun.bind(engine)
      engine.processRun = async (node, options) => {
        const result = await processRun(node, options)
        if (node.cid.equals(top)) {
          releaseLow()
          await until(() => false)
        }
        return result
      }
      source.asked.length = 0
      await walker.walk([await start(top)])
      for (const k of ['/t', '/low', '/high']) expect(await value(k)).to.equal('1')
      expect(source.asked.map(x => x.cid)).to.deep.equal([top, high, low].map(String))
    })

    it('beside another walk, a walk stuck on blocks that do not come leaves the other a worker for its next fetch', async () => {
      const walker = makeWalker(source, { numWorkers: 2, dagSyncerTimeout: 5000 })
      // the other walk: its start is held, then its child must find a worker
      const leaf = await add(delta(1, [['/leaf', '1']]))
      const otherTop = await add(delta(1, [['/other', '1']]), [leaf])
      const releaseOther = hold(otherTop)
      let otherDone = false
      const other = walker.walk([await start(otherTop)]).then(() => { otherDone = true })
      await until(() => source.asked.some(x => x.cid === otherTop.toString()))
      // this walk's two children are held: beside the other walk it may fetch one of them at a time only
      const stuck = await Promise.all([1, 2].map(async i => add(delta(1, [[`/s${i}`, '1']]))))
      const releases = stuck.map(hold)
      const top = await add(delta(1, [['/t', '1']]), stuck)
      const walking = walker.walk([await start(top)])
      await until(() => source.asked.some(x => x.cid === stuck[0].toString()))
      releaseOther()
      await until(() => otherDone)
      expect(otherDone).to.be.true()
      expect(await value('/leaf')).to.equal('1')
      for (const release of releases) release()
      await Promise.all([other, walking])
      for (const k of ['/t', '/s1', '/s2']) expect(await value(k)).to.equal('1')
    })

    it('with probe, each start of a walk has a deadline of its own and every fetch probes; without, the starts share one', async () => {
      clock.now = 0
      Date.now = () => clock.now
      const missing = await Promise.all([1, 2, 3].map(async i => {
        const cid = await add(delta(1, [[`/m${i}`, '1']]), [], false)
        source.cost.set(cid.toString(), 450)
        source.broken.add(cid.toString())
        return cid
      }))
      const walker = makeWalker(source, { dagSyncerTimeout: 1000, numWorkers: 1 })
      const starts = async (): Promise<Array<{ cid: CID }>> => Promise.all(missing.map(start))

      await expect(walker.walk(await starts(), { probe: true })).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
      expect(timeouts).to.deep.equal([1000, 1000, 1000])
      expect(source.asked.map(x => x.probe)).to.deep.equal([true, true, true])
      for (const m of missing) expect(await record(m)).to.deep.equal([1, 1, 1])

      // without: 1000, then 550 left, then exactly a tenth (100), still asked
      timeouts = []
      source.asked.length = 0
      await expect(walker.walk(await starts())).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
      expect(timeouts).to.deep.equal([1000, 550, 100])
      expect(source.asked.map(x => x.probe)).to.deep.equal([undefined, undefined, undefined])
    })
  })
})
