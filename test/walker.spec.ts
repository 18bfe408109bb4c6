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

/** Serves the blocks it holds to a walker; records what was asked and how */
class Source implements DAGBlockstore {
  readonly blocks = new MemoryBlockstore()
  readonly asked: Array<{ cid: string, preferPeer?: string }> = []
  /** blocks that fail with an error when fetched */
  readonly broken = new Set<string>()

  async * get (cid: CID, options?: FetchOptions): AsyncGenerator<Uint8Array> {
    this.asked.push({ cid: cid.toString(), preferPeer: options?.preferPeer })
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
  /** The network: nothing is at hand locally, every block is fetched (so runs merge one node each) */
  async has (): Promise<boolean> { return false }
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
})
