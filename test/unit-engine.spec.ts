/**
 * Unit spec of the engine (src/engine/engine.ts) over memory stores, nodes
 * built by hand: local commits (links, heights, the saturating priority,
 * empty and aborted writes), the merge of fetched nodes and its `w/`
 * bookkeeping (children recorded COVERED, ROOT records becoming heads,
 * re-delivered nodes), heads replaced by the nodes linking them, the
 * priority check of remote nodes, adoption of heads, block fetches (hash
 * and size checks, chunks, deadlines, discards), failed-fetch counting,
 * giving up and reviving branches, and the records the engine reads back.
 */

import { logger } from '@libp2p/logger'
import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import { sha256, sha512 } from 'multiformats/hashes/sha2'
import * as varint from 'uint8-varint'
import { blockKey } from '../src/codec/block-key.js'
import { cidKey } from '../src/codec/cid-key.js'
import { decodeNode, encodeNode } from '../src/codec/dag-node.js'
import { MAX_PRIORITY } from '../src/codec/delta.js'
import { Layout } from '../src/crdt/layout.js'
import { decodePriority } from '../src/crdt/or-set.js'
import { Engine, LinksNeeded, MALFORMED_REASON } from '../src/engine/engine.js'
import type { DecodedNode } from '../src/codec/dag-node.js'
import type { Delta } from '../src/codec/delta.js'
import type { SetChange } from '../src/crdt/or-set.js'
import type { EngineInit, FetchOptions } from '../src/engine/engine.js'
import type { AbortOptions } from 'interface-store'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const dec = (b: Uint8Array): string => new TextDecoder().decode(b)

function delta (priority: number, puts: Array<[string, string]>, dagName = ''): Delta {
  return { priority, dagName, elements: puts.map(([key, value]) => ({ key, id: '', value: enc(value) })), tombstones: [] }
}

/** A blockstore that records discards and can fail puts */
class TestBlockstore extends MemoryBlockstore {
  discarded: string[] = []
  failPutAfter = Infinity
  puts = 0
  override async put (cid: CID, bytes: Uint8Array, options?: AbortOptions): Promise<CID> {
    if (++this.puts > this.failPutAfter) throw new Error('disk full')
    return super.put(cid, bytes, options)
  }

  discard (cid: CID): void {
    this.discarded.push(cid.toString())
  }
}

/** Builds nodes as a remote writer would: encoded, stored in `source`, decoded */
async function node (d: Delta, links: CID[] = []): Promise<DecodedNode & { bytes: Uint8Array }> {
  const { cid, bytes } = await encodeNode(d, links)
  return { ...decodeNode(cid, bytes), bytes }
}

describe('Engine', () => {
  let ds: MemoryDatastore
  let bs: TestBlockstore
  let layout: Layout
  let engine: Engine
  let events: Array<{ changes: SetChange[], node?: { cid: CID, priority: number, dagName: string, local: boolean } }>

  function make (init: Partial<EngineInit> = {}): Engine {
    return new Engine({
      datastore: ds,
      blockstore: bs,
      layout,
      log: logger('test:engine'),
      dagSyncerTimeout: 2000,
      maxBlockSize: 1024 * 1024,
      maxFetchAttempts: 3,
      onChanges: (changes, node) => { events.push({ changes, node }) },
      ...init
    })
  }

  beforeEach(async () => {
    ds = new MemoryDatastore()
    bs = new TestBlockstore()
    layout = new Layout('/ns')
    events = []
    engine = make()
    await engine.heads.load()
  })

  async function put (key: string, value: string, dagName = ''): Promise<ReturnType<Engine['commitLocal']>> {
    return engine.commitLocal(async () => delta(0, [[key, value]], dagName))
  }

  async function value (key: string): Promise<string | undefined> {
    return await engine.set.has(key) ? dec(await engine.set.get(key)) : undefined
  }

  async function pendingMark (cid: CID): Promise<number[] | undefined> {
    const k = layout.pendingKey(blockKey(cid))
    return await ds.has(k) ? [...await ds.get(k)] : undefined
  }

  /** A chain of three nodes stored in `bs`, the top first */
  async function chain3 (): Promise<Array<DecodedNode & { bytes: Uint8Array }>> {
    const low = await node(delta(1, [['/a', '1']]))
    const mid = await node(delta(2, [['/a', '2']]), [low.cid])
    const top = await node(delta(3, [['/a', '3']]), [mid.cid])
    for (const n of [low, mid, top]) await bs.put(n.cid, n.bytes)
    return [top, mid, low]
  }

  describe('local commits', () => {
    it('writes a node on top of the heads of its DAG, one height up, and stores its block', async () => {
      const first = await put('/a', '1')
      expect(first?.head.height).to.equal(1)
      expect(first?.replaced).to.deep.equal([])
      expect(first?.changes.map(c => c.key)).to.deep.equal(['/a'])
      expect(first?.unprocessed).to.deep.equal([])
      const second = await put('/b', '2')
      expect(second?.head.height).to.equal(2)
      expect(second?.replaced.map(h => h.cid.toString())).to.deep.equal([first?.head.cid.toString()])
      expect(engine.heads.list('').map(h => h.cid.toString())).to.deep.equal([second?.head.cid.toString()])
      const stored = decodeNode(second?.head.cid as CID, await readBlock(bs, second?.head.cid as CID))
      expect(stored.links.map(String)).to.deep.equal([first?.head.cid.toString()])
      expect(stored.delta.priority).to.equal(2)
      expect(await engine.isProcessed(second?.head.cid as CID)).to.be.true()
      expect(decodePriority(await ds.get(layout.processedKey(blockKey(second?.head.cid as CID))))).to.equal(2)
      expect(await value('/b')).to.equal('2')
      expect(events.map(e => [e.node?.local, e.node?.priority, e.node?.dagName])).to.deep.equal([[true, 1, ''], [true, 2, '']])
    })

    it('a named DAG has its own heads and heights', async () => {
      await put('/a', '1')
      await put('/a', '2')
      const named = await put('/a', '3', 'docs')
      expect(named?.head.height).to.equal(1)
      expect(named?.head.dagName).to.equal('docs')
      expect(named?.replaced).to.deep.equal([])
      expect(engine.heads.count('')).to.equal(1)
      expect(engine.heads.count('docs')).to.equal(1)
    })

    it('writes nothing for an empty or absent delta', async () => {
      expect(await engine.commitLocal(async () => undefined)).to.be.undefined()
      expect(await engine.commitLocal(async () => delta(0, []))).to.be.undefined()
      expect(engine.heads.all()).to.deep.equal([])
      expect(events).to.deep.equal([])
      // a delta with tombstones only is written
      const r = await engine.commitLocal(async () => ({ ...delta(0, []), tombstones: [{ key: '/a', id: '/AAAA', value: new Uint8Array(0) }] }))
      expect(r?.head.height).to.equal(1)
    })

    it('an aborted signal fails the commit before the delta is built', async () => {
      const controller = new AbortController()
      controller.abort()
      let built = false
      await expect(engine.commitLocal(async () => { built = true; return delta(0, [['/a', '1']]) }, { signal: controller.signal }))
        .to.eventually.be.rejected.with.property('name', 'AbortError')
      expect(built).to.be.false()
    })

    it('saturates the priority at MAX_PRIORITY and reports linked heads never processed', async () => {
      const top = await node(delta(MAX_PRIORITY, [['/a', 'far']]))
      await engine.adoptHead(top)
      const r = await put('/b', 'next')
      expect(r?.head.height).to.equal(MAX_PRIORITY)
      expect(r?.unprocessed.map(String)).to.deep.equal([top.cid.toString()])
      // reserved for the caller
      expect(engine.reserve(top.cid)).to.be.false()
      expect(await pendingMark(top.cid)).to.deep.equal([0])
    })

    it('a write larger than maxDeltaSize becomes a chain of nodes; a failure after the first keeps what committed', async () => {
      engine = make({ maxDeltaSize: 40 })
      const puts: Array<[string, string]> = Array.from({ length: 6 }, (_, i) => [`/key${i}`, 'value-value'])
      const r = await engine.commitLocal(async () => delta(0, puts))
      expect(r?.head.height).to.be.greaterThan(1)
      expect(r?.failure).to.be.undefined()
      expect(r?.changes.map(c => c.key).sort()).to.deep.equal(puts.map(p => p[0]))
      expect(engine.heads.count('')).to.equal(1)
      for (const [k] of puts) expect(await value(k)).to.equal('value-value')

      bs.failPutAfter = bs.puts + 1
      const partial = await engine.commitLocal(async () => delta(0, puts.map(([k]) => [k, 'second'])))
      expect(partial?.failure?.message).to.equal('disk full')
      expect(partial?.head.height).to.equal((r?.head.height ?? 0) + 1)
      expect(engine.heads.list('').map(h => h.cid.toString())).to.deep.equal([partial?.head.cid.toString()])
      // a first node that fails fails the write
      bs.failPutAfter = bs.puts
      await expect(put('/z', 'z')).to.eventually.be.rejectedWith('disk full')
    })
  })

  describe('merging fetched nodes', () => {
    it('merges a node, makes it a head, records its unprocessed children COVERED and reserves them', async () => {
      const child = await node(delta(1, [['/a', 'old']]))
      const parent = await node(delta(2, [['/a', 'new']]), [child.cid])
      // the child's block at hand: the parent's priority can be checked against it
      await bs.put(child.cid, child.bytes)
      expect(await engine.addRoot(parent.cid)).to.be.true()
      expect(await pendingMark(parent.cid)).to.deep.equal([1])
      const { children, changes } = await engine.processNode(parent)
      expect(children.map(String)).to.deep.equal([child.cid.toString()])
      expect(changes.map(c => c.key)).to.deep.equal(['/a'])
      expect(engine.reserve(child.cid)).to.be.false()
      expect(await pendingMark(parent.cid)).to.be.undefined()
      expect(await pendingMark(child.cid)).to.deep.equal([0])
      expect(engine.heads.list('').map(String)).to.have.length(1)
      expect(engine.heads.get('', parent.cid)?.height).to.equal(2)
      expect(events[0].node).to.deep.include({ priority: 2, local: false, dagName: '' })

      // the child: merged, its record gone, not a head (something links it)
      engine.release(child.cid)
      const second = await engine.processNode(child)
      expect(second.children).to.deep.equal([])
      expect(await pendingMark(child.cid)).to.be.undefined()
      expect(engine.heads.get('', child.cid)).to.be.undefined()
      expect(await value('/a')).to.equal('new')
      expect(await engine.pendingBranches()).to.deep.equal([])
    })

    it('a node linking a head replaces it; a processed link is neither recorded nor walked', async () => {
      const mine = await put('/a', 'mine')
      const remote = await node(delta(2, [['/b', 'theirs']]), [mine?.head.cid as CID])
      const { children } = await engine.processNode(remote)
      expect(children).to.deep.equal([])
      expect(engine.heads.list('').map(h => h.cid.toString())).to.deep.equal([remote.cid.toString()])
      expect(await pendingMark(mine?.head.cid as CID)).to.be.undefined()
    })

    it('a child already reserved by another walk is recorded but not handed back', async () => {
      const child = await node(delta(1, [['/a', 'x']]))
      const parent = await node(delta(2, [['/b', 'y']]), [child.cid])
      await bs.put(child.cid, child.bytes)
      expect(engine.reserve(child.cid)).to.be.true()
      const { children } = await engine.processNode(parent)
      expect(children).to.deep.equal([])
      expect(await pendingMark(child.cid)).to.deep.equal([0])
    })

    it('a re-delivered node changes nothing and clears its record', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      await engine.processNode(n)
      await ds.put(layout.pendingKey(blockKey(n.cid)), Uint8Array.of(1))
      events = []
      const again = await engine.processNode(n)
      expect(again).to.deep.include({ children: [], changes: [], merged: 0 })
      expect(await pendingMark(n.cid)).to.be.undefined()
      expect(events).to.deep.equal([])
    })

    it('addRoot keeps an existing record and refuses a processed node', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      await ds.put(layout.pendingKey(blockKey(n.cid)), Uint8Array.of(0, 2))
      expect(await engine.addRoot(n.cid)).to.be.true()
      expect(await pendingMark(n.cid)).to.deep.equal([0, 2])
      expect(await engine.isPending(n.cid)).to.be.true()
      // COVERED: processing it does not make it a head
      await engine.processNode(n)
      expect(engine.heads.all()).to.deep.equal([])
      expect(await engine.isPending(n.cid)).to.be.false()
      expect(await engine.addRoot(n.cid)).to.be.false()
      expect(await pendingMark(n.cid)).to.be.undefined()
    })

    it('refuses a remote node claiming more priority than its processed links allow, and accepts exactly that', async () => {
      const base = await node(delta(1, [['/a', 'x']]))
      await engine.processNode(base)
      const liar = await node(delta(3, [['/a', 'y']]), [base.cid])
      await expect(engine.processNode(liar)).to.eventually.be.rejected.with.property('name', 'MalformedDeltaError')
      expect(await engine.isProcessed(liar.cid)).to.be.false()
      expect(await value('/a')).to.equal('x')
      const honest = await node(delta(2, [['/a', 'y']]), [base.cid])
      await engine.processNode(honest)
      expect(await value('/a')).to.equal('y')
      // without links a node may claim 1
      const loose = await node(delta(2, [['/c', 'z']]))
      await expect(engine.processNode(loose)).to.eventually.be.rejected.with.property('name', 'MalformedDeltaError')
      await engine.processNode(await node(delta(1, [['/c', 'z']])))
      expect(await value('/c')).to.equal('z')
    })

    it('checks a node against the priorities its links claim in their blocks: before its links or after them, the same decision', async () => {
      const base = await node(delta(1, [['/a', 'x']]))
      await bs.put(base.cid, base.bytes)
      const liar = await node(delta(3, [['/a', 'y']]), [base.cid])
      const honest = await node(delta(2, [['/b', 'y']]), [base.cid])
      // before its link: the link's block is at hand, so the check needs no marker
      await expect(engine.processNode(liar)).to.eventually.be.rejected.with.property('name', 'MalformedDeltaError')
      await engine.processNode(honest)
      expect(await engine.isProcessed(base.cid)).to.be.false()
      expect(await value('/b')).to.equal('y')
      // after its link: the same decision
      await engine.processNode(base)
      await expect(engine.processNode(liar)).to.eventually.be.rejected.with.property('name', 'MalformedDeltaError')
      expect(await engine.isProcessed(liar.cid)).to.be.false()
      expect(await value('/a')).to.equal('x')
    })

    it('a node whose links are neither processed nor at hand waits for them: nothing merged, its w/ record kept; given them, it is decided', async () => {
      const far = await node(delta(4, [['/x', '1']]))
      const top = await node(delta(5, [['/t', '1']]), [far.cid])
      await ds.put(layout.pendingKey(blockKey(top.cid)), Uint8Array.of(1))
      const waiting = await engine.processRun(top).then(() => undefined, (err: Error & { links?: CID[] }) => err)
      expect(waiting?.name).to.equal('LinksNeeded')
      expect(waiting?.links?.map(String)).to.deep.equal([far.cid.toString()])
      expect(await engine.isProcessed(top.cid)).to.be.false()
      expect(await value('/t')).to.be.undefined()
      expect(await pendingMark(top.cid)).to.deep.equal([1])
      // fetched later (the walker passes what it fetched): merged, the link handed back decoded
      const run = await engine.processRun(top, { links: new Map([[cidKey(far.cid), { priority: 4, node: far }]]) })
      expect(await value('/t')).to.equal('1')
      expect(run.children.map(String)).to.deep.equal([far.cid.toString()])
      expect(run.known.get(cidKey(far.cid))?.cid.toString()).to.equal(far.cid.toString())
      // a link that claims too little refuses it, whether passed or read from the blockstore
      const low = await node(delta(1, [['/y', '1']]))
      const over = await node(delta(5, [['/o', '1']]), [low.cid])
      await expect(engine.processRun(over, { links: new Map([[cidKey(low.cid), { priority: 1 }]]) })).to.eventually.be.rejected.with.property('name', 'MalformedDeltaError')
      await bs.put(low.cid, low.bytes)
      await expect(engine.processNode(over)).to.eventually.be.rejected.with.property('name', 'MalformedDeltaError')
      expect(await value('/o')).to.be.undefined()
      // one link that allows the claim decides, whatever the others (here never available) would claim
      const enough = await node(delta(2, [['/e', '1']]), [top.cid, (await node(delta(1, [['/gone', '1']]))).cid])
      await engine.processNode(enough)
      expect(await value('/e')).to.equal('1')
    })

    it('an over-claiming child is refused; its parent claiming the child\'s claim + 1 is accepted, wherever the child was decided', async () => {
      const base = await node(delta(1, [['/k', 'base']]))
      const child = await node(delta(9, [['/k', 'child']]), [base.cid])
      const parent = await node(delta(10, [['/k', 'parent']]), [child.cid])
      for (const n of [base, child, parent]) await bs.put(n.cid, n.bytes)
      const run = await engine.processRun(parent, { local: bs })
      // the parent merged, the child left out of the run and handed back
      expect(run.nodes.map(n => n.cid.toString())).to.include(parent.cid.toString())
      expect(await engine.isProcessed(parent.cid)).to.be.true()
      expect(await engine.isProcessed(child.cid)).to.be.false()
      await expect(engine.processNode(child)).to.eventually.be.rejected.with.property('name', 'MalformedDeltaError')
      await engine.processNode(base)
      expect(await value('/k')).to.equal('parent')
    })

    it('a node with links refused at decode is not checked (their claims are unknowable); one processed without a recorded priority is read from its block', async () => {
      const old = await node(delta(1, [['/y', '1']]))
      await ds.put(layout.processedKey(blockKey(old.cid)), new Uint8Array(0))
      await bs.put(old.cid, old.bytes)
      await expect(engine.processNode(await node(delta(60, [['/b', 'x']]), [old.cid]))).to.eventually.be.rejected.with.property('name', 'MalformedDeltaError')
      await engine.processNode(await node(delta(2, [['/b', 'x']]), [old.cid]))
      expect(await value('/b')).to.equal('x')
      const refused = { ...await node(delta(70, [['/c', 'x']]), []), refusedLinks: 2 }
      await engine.processNode(refused)
      expect(await value('/c')).to.equal('x')
      expect((await engine.refusedLinks()).map(r => [r.cid.toString(), r.refused])).to.deep.equal([[refused.cid.toString(), 2]])
    })

    it('the priority check takes the greatest link, capped at MAX_PRIORITY', async () => {
      const a = await node(delta(1, [['/a', '1']]))
      const b = await node(delta(7, [['/b', '1']]))
      await ds.put(layout.processedKey(blockKey(a.cid)), varint.encode(2))
      await ds.put(layout.processedKey(blockKey(b.cid)), varint.encode(8))
      await engine.processNode(await node(delta(8, [['/c', '1']]), [a.cid, b.cid]))
      expect(await value('/c')).to.equal('1')
      const top = await node(delta(MAX_PRIORITY, [['/t', '1']]))
      await ds.put(layout.processedKey(blockKey(top.cid)), varint.encode(MAX_PRIORITY + 1))
      await engine.processNode(await node(delta(MAX_PRIORITY, [['/d', '1']]), [top.cid]))
      expect(await value('/d')).to.equal('1')
    })
  })

  describe('adopted heads', () => {
    it('adopts a head only into an empty DAG, unless alongside; never twice', async () => {
      const a = await node(delta(4, [['/a', '1']]))
      const b = await node(delta(5, [['/b', '1']]))
      await engine.adoptHead(a)
      await engine.adoptHead(b)
      expect(engine.heads.list('').map(h => h.cid.toString())).to.deep.equal([a.cid.toString()])
      await engine.adoptHead(b, { alongside: true })
      await engine.adoptHead(a, { alongside: true })
      expect(engine.heads.count('')).to.equal(2)
      expect(engine.heads.get('', b.cid)?.height).to.equal(5)
      await engine.adoptHead(await node(delta(1, [['/n', '1']], 'docs')))
      expect(engine.heads.count('docs')).to.equal(1)
    })

    it('a node adopted late, once a node linking it was merged (COVERED, or processed), is no head', async () => {
      // two broadcasts found the DAG empty; the newer head was fetched, adopted and merged first
      const older = await node(delta(1, [['/a', '1']]))
      const newer = await node(delta(2, [['/a', '2']]), [older.cid])
      await bs.put(older.cid, older.bytes)
      expect(await engine.addRoot(newer.cid)).to.be.true()
      await engine.adoptHead(newer, { alongside: true })
      await engine.processNode(newer)
      expect(await pendingMark(older.cid)).to.deep.equal([0])
      // the older head's own turn comes now: it is on the newer one's frontier
      await engine.adoptHead(older, { alongside: true })
      expect(engine.heads.list('').map(h => h.cid.toString())).to.deep.equal([newer.cid.toString()])
      engine.release(older.cid)
      await engine.processNode(older)
      await engine.adoptHead(older, { alongside: true })
      expect(engine.heads.list('').map(h => h.cid.toString())).to.deep.equal([newer.cid.toString()])
    })

    it('an adopted head whose merge is refused as malformed stops being a head', async () => {
      const base = await node(delta(1, [['/a', '1']]))
      await engine.processNode(base)
      const liar = await node(delta(9, [['/a', '2']]), [base.cid])
      await engine.adoptHead(liar, { alongside: true })
      expect(engine.heads.get('', liar.cid)).to.not.be.undefined()
      await expect(engine.processNode(liar)).to.eventually.be.rejected.with.property('name', 'MalformedDeltaError')
      expect(engine.heads.get('', liar.cid)).to.be.undefined()
      expect(engine.heads.get('', base.cid)).to.not.be.undefined()
    })
  })

  describe('fetching blocks', () => {
    it('fetches, joins chunks, and decodes a node', async () => {
      const n = await node(delta(1, [['/a', 'x'.repeat(100)]]))
      const third = Math.ceil(n.bytes.byteLength / 3)
      const getter = { get: async function * () { for (let i = 0; i < n.bytes.byteLength; i += third) yield n.bytes.subarray(i, i + third) } }
      const got = await engine.fetchNode(n.cid, getter)
      expect(got.cid.equals(n.cid)).to.be.true()
      expect(dec(got.delta.elements[0].value)).to.equal('x'.repeat(100))
      const single = { get: function * () { yield n.bytes } }
      expect((await engine.fetchNode(n.cid, single)).delta.priority).to.equal(1)
    })

    it('refuses bytes that do not match the CID hash, as a fetch error, and discards them', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      const other = await node(delta(1, [['/a', 'forged']]))
      const getter = { get: function * () { yield other.bytes } }
      await expect(engine.fetchNode(n.cid, getter)).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
      expect(bs.discarded).to.deep.equal([n.cid.toString()])
    })

    it('a CID with another hash function is decoded without the sha2-256 check', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      const cid = CID.createV1(0x70, await sha512.digest(n.bytes))
      expect((await engine.fetchNode(cid, { get: function * () { yield n.bytes } })).delta.priority).to.equal(1)
    })

    it('refuses a block over maxBlockSize as malformed and discards it; exactly maxBlockSize passes', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      engine = make({ maxBlockSize: n.bytes.byteLength - 1 })
      const getter = { get: function * () { yield n.bytes.subarray(0, 10); yield n.bytes.subarray(10) } }
      const err = await engine.fetchNode(n.cid, getter).then(() => undefined, (e: Error) => e)
      expect(err).to.have.property('name', 'MalformedBlockError')
      expect(bs.discarded).to.deep.equal([n.cid.toString()])
      engine = make({ maxBlockSize: n.bytes.byteLength })
      expect((await engine.fetchNode(n.cid, getter)).cid.equals(n.cid)).to.be.true()
    })

    it('a block that does not decode is discarded and refused as malformed', async () => {
      const bytes = enc('not a dag-pb node')
      const cid = CID.createV1(0x70, await sha256.digest(bytes))
      const err = await engine.fetchNode(cid, { get: function * () { yield bytes } }).then(() => undefined, (e: Error) => e)
      expect(err?.name).to.match(/^Malformed/)
      expect(bs.discarded).to.deep.equal([cid.toString()])
    })

    it('a getter that fails or never answers gives a BlockFetchError within the timeout', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      // eslint-disable-next-line require-yield -- a getter that fails before its first chunk
      const failing = { get: async function * (): AsyncGenerator<Uint8Array> { throw new Error('no route') } }
      const err = await engine.fetchNode(n.cid, failing).then(() => undefined, (e: Error) => e)
      expect(err).to.have.property('name', 'BlockFetchError')
      expect(err?.message).to.include('no route')
      const stalling = {
        // eslint-disable-next-line require-yield -- a getter that fails before its first chunk
        get: async function * (_: CID, opts?: AbortOptions): AsyncGenerator<Uint8Array> {
          await new Promise((resolve, reject) => { opts?.signal?.addEventListener('abort', () => { reject(new Error('aborted')) }) })
        }
      }
      // the fetch's own timeout overrides dagSyncerTimeout (0 here: wait forever)
      engine = make({ dagSyncerTimeout: 0 })
      await expect(engine.fetchNode(n.cid, stalling, { timeout: 50 })).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
      engine = make({ dagSyncerTimeout: 50 })
      await expect(engine.fetchNode(n.cid, stalling)).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
      // the caller's abort is an abort, not a fetch error
      const controller = new AbortController()
      setTimeout(() => { controller.abort() }, 20)
      await expect(engine.fetchNode(n.cid, stalling, { signal: controller.signal, timeout: 0 })).to.eventually.be.rejected.with.property('name', 'AbortError')
    })

    it('hands preferPeer to the getter only when given', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      const seen: FetchOptions[] = []
      const getter = { get: function * (_: CID, opts?: FetchOptions) { seen.push(opts ?? {}); yield n.bytes } }
      await engine.fetchNode(n.cid, getter, { preferPeer: 'peer-1' })
      await engine.fetchNode(n.cid, getter)
      expect(seen[0].preferPeer).to.equal('peer-1')
      expect('preferPeer' in seen[1]).to.be.false()
    })

    it('a discard that throws is logged, not thrown', async () => {
      bs.discard = () => { throw new Error('cannot') }
      const bytes = enc('junk')
      const cid = CID.createV1(0x70, await sha256.digest(enc('other')))
      await expect(engine.fetchNode(cid, { get: function * () { yield bytes } })).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
    })
  })

  describe('failed fetches and given-up branches', () => {
    it('counts failed fetches in the w/ record and gives the branch up at maxFetchAttempts', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      await engine.addRoot(n.cid)
      expect(await engine.recordFetchFailure(n.cid)).to.be.false()
      // kind, failed fetches, of those really asked
      expect(await pendingMark(n.cid)).to.deep.equal([1, 1, 1])
      expect(await engine.recordFetchFailure(n.cid)).to.be.false()
      expect(await pendingMark(n.cid)).to.deep.equal([1, 2, 2])
      expect(engine.gaveUp).to.equal(0)
      expect(await engine.recordFetchFailure(n.cid)).to.be.true()
      expect(await pendingMark(n.cid)).to.be.undefined()
      expect(engine.gaveUp).to.equal(1)
      const given = await engine.givenUp()
      expect(given.map(g => g.cid.toString())).to.deep.equal([n.cid.toString()])
      expect(given[0].reason).to.equal('no block after 3 fetches')
      expect(await engine.pendingBranches()).to.deep.equal([])
    })

    it('a failure with no w/ record counts nothing; a one-byte record counts from zero', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      expect(await engine.recordFetchFailure(n.cid)).to.be.false()
      expect(await pendingMark(n.cid)).to.be.undefined()
      await ds.put(layout.pendingKey(blockKey(n.cid)), Uint8Array.of(0))
      await engine.recordFetchFailure(n.cid)
      expect(await pendingMark(n.cid)).to.deep.equal([0, 1, 1])
      await ds.put(layout.pendingKey(blockKey(n.cid)), new Uint8Array(0))
      await engine.recordFetchFailure(n.cid)
      expect(await pendingMark(n.cid)).to.deep.equal([0, 1, 1])
    })

    it('giveUp moves a w/ record to g/ with the reason (cut at 200 characters), and does nothing without one', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      await engine.giveUp(n.cid, 'why')
      expect(await engine.givenUp()).to.deep.equal([])
      expect(engine.gaveUp).to.equal(0)
      await engine.addRoot(n.cid)
      await engine.giveUp(n.cid, 'r'.repeat(300))
      const given = await engine.givenUp()
      expect(given[0].reason).to.equal('r'.repeat(200))
      expect(await engine.isPending(n.cid)).to.be.false()
    })

    it('reviveGivenUp puts given-up branches back with one attempt left', async () => {
      const a = await node(delta(1, [['/a', 'x']]))
      const b = await node(delta(1, [['/b', 'x']]))
      for (const n of [a, b]) {
        await engine.addRoot(n.cid)
        await engine.giveUp(n.cid, 'test')
      }
      expect(await engine.reviveGivenUp()).to.equal(2)
      expect(await engine.givenUp()).to.deep.equal([])
      // ROOT as they were given up
      expect(await pendingMark(a.cid)).to.deep.equal([1, 2])
      expect((await engine.pendingBranches()).map(String).sort()).to.deep.equal([a.cid.toString(), b.cid.toString()].sort())
      expect(await engine.recordFetchFailure(a.cid)).to.be.true()
    })

    it('a broadcast head given up, revived and merged becomes a head; a branch given up below a processed node, or linked by one merged since, does not (regression: every revived branch came back COVERED, and a replica lost a head the others had)', async () => {
      const root = await node(delta(1, [['/r', 'x']]))
      const link = await node(delta(1, [['/l', '1']]))
      const top = await node(delta(1, [['/t', '1']]), [link.cid])
      const late = await node(delta(1, [['/z', '1']]))
      const above = await node(delta(1, [['/y', '1']]), [late.cid])
      await engine.addRoot(root.cid)
      await engine.giveUp(root.cid, 'gone')
      await engine.processNode(top)
      await engine.giveUp(link.cid, 'gone')
      await engine.addRoot(late.cid)
      await engine.giveUp(late.cid, 'gone')
      // merged after late was given up: it records late COVERED again
      await engine.processNode(above)
      expect(await engine.reviveGivenUp()).to.equal(3)
      for (const n of [root, link, late]) await engine.processNode(n)
      expect(engine.heads.list('').map(h => h.cid.toString()).sort()).to.deep.equal([root.cid, top.cid, above.cid].map(String).sort())
    })

    it('a branch given up below a processed node and then announced as a head is no head once merged (regression: the announcement recorded it ROOT, and it became an extra head)', async () => {
      const link = await node(delta(1, [['/l', '1']]))
      const top = await node(delta(1, [['/t', '1']]), [link.cid])
      await engine.processNode(top)
      await engine.giveUp(link.cid, 'gone')
      expect(await engine.addRoot(link.cid)).to.be.true()
      expect(await pendingMark(link.cid)).to.deep.equal([0])
      await engine.processNode(link)
      expect(engine.heads.list('').map(h => h.cid.toString())).to.deep.equal([top.cid.toString()])
    })

    it('a branch given up keeps the peers that refused it, and reviveGivenUp can revive only those a newcomer was not asked for', async () => {
      const a = await node(delta(1, [['/a', 'x']]))
      const b = await node(delta(1, [['/b', 'x']]))
      await engine.addRoot(a.cid)
      await engine.addRoot(b.cid)
      // maxFetchAttempts is 3 here: the third asked failure gives up, with the peers of that fetch
      for (let i = 0; i < 3; i++) await engine.recordFetchFailure(a.cid, { refusedBy: ['p1', 'p2'] })
      await engine.giveUp(b.cid, 'no block', { refusedBy: ['p1'] })
      const given = new Map((await engine.givenUp()).map(g => [g.cid.toString(), g]))
      expect(given.get(a.cid.toString())?.refusedBy).to.deep.equal(['p1', 'p2'])
      expect(given.get(a.cid.toString())?.reason).to.equal('no block after 3 fetches')
      expect(given.get(b.cid.toString())?.refusedBy).to.deep.equal(['p1'])
      // p2 joins: it was asked for a, not for b
      expect(await engine.reviveGivenUp({ only: g => !(g.refusedBy?.includes('p2') ?? false) })).to.equal(1)
      expect((await engine.pendingBranches()).map(String)).to.deep.equal([b.cid.toString()])
      expect((await engine.givenUp()).map(g => g.cid.toString())).to.deep.equal([a.cid.toString()])
    })

    it('a given-up branch merged since is dropped from the list; unreadable records are skipped', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      await engine.addRoot(n.cid)
      await engine.giveUp(n.cid, 'test')
      await ds.put(new Key('/ns/g/not-a-cid'), enc('junk'))
      await engine.processNode(n)
      expect(await engine.givenUp()).to.deep.equal([])
      expect(await ds.has(new Key(`/ns/g${blockKey(n.cid)}`))).to.be.false()
    })

    it('pendingBranches drops unreadable w/ records; dropPending forgets one', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      await engine.addRoot(n.cid)
      await ds.put(new Key('/ns/w/not-a-cid'), Uint8Array.of(0))
      expect((await engine.pendingBranches()).map(String)).to.deep.equal([n.cid.toString()])
      expect(await ds.has(new Key('/ns/w/not-a-cid'))).to.be.false()
      await engine.dropPending(n.cid)
      expect(await engine.pendingBranches()).to.deep.equal([])
    })

    it('refusedLinks skips unreadable records', async () => {
      await ds.put(new Key('/ns/x/not-a-cid'), varint.encode(1))
      expect(await engine.refusedLinks()).to.deep.equal([])
    })
  })

  describe('what errors and records say', () => {
    it('a failed fetch names the block and keeps the getter\'s error as its cause', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      const failure = new Error('no route')
      // eslint-disable-next-line require-yield -- a getter that fails before its first chunk
      const failing = { get: async function * (): AsyncGenerator<Uint8Array> { throw failure } }
      const err = await engine.fetchNode(n.cid, failing).then(() => undefined, (e: Error) => e)
      expect(err).to.have.property('name', 'BlockFetchError')
      expect(err?.message).to.equal(`Could not fetch block ${n.cid}: no route`)
      expect(err?.cause).to.equal(failure)
    })

    it('a block over maxBlockSize or not matching its hash is refused naming the block', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      engine = make({ maxBlockSize: 10 })
      const whole = { get: function * () { yield n.bytes } }
      const tooLarge = await engine.fetchNode(n.cid, whole).then(() => undefined, (e: Error) => e)
      expect(tooLarge).to.have.property('name', 'MalformedBlockError')
      expect(tooLarge?.message).to.equal(`Block ${n.cid} is larger than 10 bytes`)
      expect(tooLarge?.cause).to.have.property('name', 'BlockTooLargeError')
      expect(tooLarge?.cause).to.have.property('message', 'Block is larger than 10 bytes')
      engine = make()
      const other = await node(delta(1, [['/a', 'forged']]))
      const forged = await engine.fetchNode(n.cid, { get: function * () { yield other.bytes } }).then(() => undefined, (e: Error) => e)
      expect(forged?.message).to.equal(`Block ${n.cid} does not match its hash`)
    })

    it('pendingByAttempts puts branches asked least first, then those failed least, then in record order', async () => {
      const cids = await Promise.all(['a', 'b', 'c', 'd', 'e', 'f'].map(async k => (await node(delta(1, [[`/${k}`, 'x']]))).cid))
      const [a, b, c, d, e, f] = cids
      // kind, failed fetches, of those asked
      const marks: Array<[CID, number[]]> = [[a, [0, 2, 1]], [b, [0, 1, 1]], [c, [0, 5, 0]], [d, [1]], [e, [0, 3, 3]], [f, [0, 3, 3]]]
      for (const [cid, mark] of marks) await ds.put(layout.pendingKey(blockKey(cid)), Uint8Array.from(mark))
      await ds.put(new Key('/ns/w/not-a-cid'), Uint8Array.of(0))
      const order = (await engine.pendingByAttempts()).map(String)
      // e and f tie: they keep the order the records are read in
      const ef = (await engine.pendingBranches()).map(String).filter(x => x === e.toString() || x === f.toString())
      expect(order).to.deep.equal([d, c, b, a].map(String).concat(ef))
    })

    it('the getter is told probe only when asked to probe, and preferPeer only when given', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      const seen: FetchOptions[] = []
      const getter = { get: function * (_: CID, opts?: FetchOptions) { seen.push(opts ?? {}); yield n.bytes } }
      await engine.fetchNode(n.cid, getter, { probe: true, preferPeer: 'peer-2' })
      await engine.fetchNode(n.cid, getter, { probe: false })
      await engine.fetchNode(n.cid, getter)
      expect(seen.map(o => [o.probe, o.preferPeer])).to.deep.equal([[true, 'peer-2'], [undefined, undefined], [undefined, undefined]])
      expect(seen.map(o => 'probe' in o)).to.deep.equal([true, false, false])
    })

    it('reviveGivenUp leaves branches given up for a malformed block given up', async () => {
      const bad = await node(delta(1, [['/bad', 'x']]))
      const lost = await node(delta(1, [['/lost', 'x']]))
      for (const n of [bad, lost]) await engine.addRoot(n.cid)
      await engine.giveUp(bad.cid, `${MALFORMED_REASON} (MalformedBlockError)`)
      await engine.giveUp(lost.cid, 'no block after 3 fetches')
      expect(await engine.reviveGivenUp()).to.equal(1)
      expect((await engine.givenUp()).map(g => g.cid.toString())).to.deep.equal([bad.cid.toString()])
      expect((await engine.pendingBranches()).map(String)).to.deep.equal([lost.cid.toString()])
    })

    it('idle() waits until every job queued on the merge lock has run', async () => {
      const ran: number[] = []
      let open: () => void = () => {}
      const gate = new Promise<void>(resolve => { open = resolve })
      const first = engine.exclusive(async () => { await gate; ran.push(1) })
      const second = engine.exclusive(async () => { ran.push(2) })
      expect(engine.queued).to.equal(2)
      const idle = engine.idle()
      open()
      await idle
      expect(ran).to.deep.equal([1, 2])
      expect(engine.queued).to.equal(0)
      await Promise.all([first, second])
    })
  })

  describe('runs over blocks a DAG syncer holds (getLocal)', () => {
    it('merges the children getLocal hands over, decoded or as bytes checked against their CID; absent, too large or forged ones are handed back', async () => {
      const kids = await Promise.all([
        node(delta(1, [['/c0', 'decoded']])),
        node(delta(1, [['/c1', 'bytes'.padEnd(64, '.')]])),
        node(delta(1, [['/c2', 'absent']])),
        node(delta(1, [['/c3', 'forged']])),
        node(delta(1, [['/c4', 'too large'.padEnd(65, '.')]]))
      ])
      const parent = await node(delta(2, [['/p', 'parent']]), kids.map(k => k.cid))
      // c1 is exactly maxBlockSize bytes, c4 one more
      expect(kids[4].bytes.byteLength).to.equal(kids[1].bytes.byteLength + 1)
      engine = make({ maxBlockSize: kids[1].bytes.byteLength })
      await engine.heads.load()
      const asked: string[] = []
      const local = {
        // getLocal is the only way in: has() and get() are never asked when it exists
        has: async (): Promise<boolean> => { throw new Error('has() asked') },
        get: (): never => { throw new Error('get() asked') },
        getLocal: async (cid: CID) => {
          asked.push(cid.toString())
          const i = kids.findIndex(k => k.cid.equals(cid))
          if (i === 0) return { bytes: kids[1].bytes, node: kids[0] } // decoded already: the bytes are not checked again
          if (i === 1 || i === 4) return { bytes: kids[i].bytes }
          if (i === 3) return { bytes: enc('not the block') }
          return undefined
        }
      }
      const run = await engine.processRun(parent, { local })
      expect(run.nodes.map(n => n.cid.toString())).to.deep.equal([parent, kids[0], kids[1]].map(n => n.cid.toString()))
      expect(run.merged).to.equal(3)
      expect(run.children.map(String).sort()).to.deep.equal([kids[2], kids[3], kids[4]].map(k => k.cid.toString()).sort())
      expect(asked).to.include.members(kids.map(k => k.cid.toString()))
      expect(await value('/c0')).to.equal('decoded')
      expect(await value('/c1')).to.equal('bytes'.padEnd(64, '.'))
      expect(await value('/c3')).to.be.undefined()
      // the forged bytes were refused and discarded; the handed-back children wait on the frontier
      expect(bs.discarded).to.deep.equal([kids[3].cid.toString()])
      for (const k of [kids[2], kids[3], kids[4]]) expect(await pendingMark(k.cid), k.cid.toString()).to.deep.equal([0])
      for (const k of [kids[0], kids[1]]) expect(await engine.isProcessed(k.cid)).to.be.true()
    })
  })

  describe('run bounds', () => {
    /** A chain of `n` nodes, priorities 1..n, stored in `bs`; the top first */
    async function chain (n: number): Promise<Array<DecodedNode & { bytes: Uint8Array }>> {
      const out: Array<DecodedNode & { bytes: Uint8Array }> = []
      for (let i = 1; i <= n; i++) {
        const next = await node(delta(i, [[`/k${i}`, `v${i}`]]), out.length === 0 ? [] : [out[0].cid])
        await bs.put(next.cid, next.bytes)
        out.unshift(next)
      }
      return out
    }
    const cids = (nodes: DecodedNode[]): string[] => nodes.map(n => n.cid.toString())

    it('with the defaults a run merges every node below it whose block is at hand, parents first', async () => {
      const nodes = await chain(4)
      const run = await engine.processRun(nodes[0], { local: bs })
      expect(cids(run.nodes)).to.deep.equal(cids(nodes))
      expect(run.children).to.deep.equal([])
      expect(events.map(e => e.node?.priority)).to.deep.equal([4, 3, 2, 1])
    })

    it('stops at maxMergeNodes nodes, handing the next one back on the frontier; 0 counts as 1', async () => {
      const nodes = await chain(4)
      engine = make({ maxMergeNodes: 2 })
      await engine.heads.load()
      const run = await engine.processRun(nodes[0], { local: bs })
      expect(cids(run.nodes)).to.deep.equal(cids(nodes.slice(0, 2)))
      expect(run.children.map(String)).to.deep.equal([nodes[2].cid.toString()])
      expect(await pendingMark(nodes[2].cid)).to.deep.equal([0])
      expect(await engine.isProcessed(nodes[2].cid)).to.be.false()

      engine = make({ maxMergeNodes: 0 })
      await engine.heads.load()
      const alone = await engine.processRun(nodes[2], { local: bs })
      expect(cids(alone.nodes)).to.deep.equal(cids(nodes.slice(2, 3)))
      expect(alone.children.map(String)).to.deep.equal([nodes[3].cid.toString()])
    })

    it('stops once the blocks merged below the first node reach maxMergeBytes', async () => {
      const nodes = await chain(4)
      // the first node's block does not count; the second's reaches the bound
      engine = make({ maxMergeBytes: nodes[1].bytes.byteLength })
      await engine.heads.load()
      const run = await engine.processRun(nodes[0], { local: bs })
      expect(cids(run.nodes)).to.deep.equal(cids(nodes.slice(0, 2)))
      expect(run.children.map(String)).to.deep.equal([nodes[2].cid.toString()])

      // one byte more lets the third in
      ds = new MemoryDatastore()
      engine = make({ maxMergeBytes: nodes[1].bytes.byteLength + 1 })
      await engine.heads.load()
      const more = await engine.processRun(nodes[0], { local: bs })
      expect(cids(more.nodes)).to.deep.equal(cids(nodes.slice(0, 3)))
    })
  })

  describe('reservations of a run', () => {
    it('a committed run releases the nodes it merged and keeps the children it hands back reserved', async () => {
      const [top, mid, low] = await chain3()
      engine = make({ maxMergeNodes: 2 })
      await engine.heads.load()
      const run = await engine.processRun(top, { local: bs })
      expect(run.children.map(String)).to.deep.equal([low.cid.toString()])
      expect(engine.reserve(low.cid), 'handed back: still reserved for the caller').to.be.false()
      expect(engine.reserve(mid.cid), 'merged: released').to.be.true()
    })

    it('a run whose batch does not land releases every node it reserved and writes nothing', async () => {
      const [top, mid, low] = await chain3()
      let fail = true
      const failing = new MemoryDatastore()
      const batch = failing.batch.bind(failing)
      failing.batch = () => {
        const b = batch()
        const commit = b.commit.bind(b)
        b.commit = async (options?: AbortOptions) => {
          if (fail) throw new Error('disk gone')
          await commit(options)
        }
        return b
      }
      ds = failing
      engine = make({ maxMergeNodes: 2 })
      await engine.heads.load()
      await expect(engine.processRun(top, { local: bs })).to.eventually.be.rejected.with.property('message', 'disk gone')
      expect(engine.reserve(mid.cid), 'merged in the lost batch').to.be.true()
      expect(engine.reserve(low.cid), 'handed back by the lost batch').to.be.true()
      engine.release(mid.cid)
      engine.release(low.cid)
      for (const n of [top, mid, low]) expect(await engine.isProcessed(n.cid)).to.be.false()
      expect(events).to.deep.equal([])
      // and the same run lands once the datastore works
      fail = false
      const run = await engine.processRun(top, { local: bs })
      expect(run.merged).to.equal(2)
    })
  })

  describe('a run meeting a node its links cannot decide', () => {
    it('hands that node back decoded (in known), unmerged and on the frontier, and merges the rest', async () => {
      const lost = await node(delta(1, [['/lost', '1']]))
      const child = await node(delta(2, [['/child', '1']]), [lost.cid])
      const sibling = await node(delta(1, [['/sibling', '1']]))
      const top = await node(delta(3, [['/top', '1']]), [child.cid, sibling.cid])
      // the block of `lost` is nowhere: the child's claim of 2 cannot be checked
      for (const n of [child, sibling, top]) await bs.put(n.cid, n.bytes)
      const run = await engine.processRun(top, { local: bs })
      expect(run.nodes.map(n => n.cid.toString())).to.deep.equal([top.cid.toString(), sibling.cid.toString()])
      expect(run.children.map(String)).to.deep.equal([child.cid.toString()])
      expect(run.known.get(cidKey(child.cid))?.delta.priority).to.equal(2)
      expect([...run.known.keys()]).to.deep.equal([cidKey(child.cid)])
      expect(await engine.isProcessed(child.cid)).to.be.false()
      expect(await pendingMark(child.cid)).to.deep.equal([0])
      expect(await value('/child')).to.be.undefined()
      expect(await value('/sibling')).to.equal('1')
      expect(engine.reserve(child.cid), 'handed back reserved').to.be.false()
    })
  })

  describe('edges of local commits and the priority check', () => {
    it('a local write whose batch does not land releases the adopted heads it reserved and changes nothing', async () => {
      const adopted = await node(delta(4, [['/a', 'far']]))
      await engine.adoptHead(adopted)
      const batch = ds.batch.bind(ds)
      ds.batch = () => Object.assign(batch(), { commit: async () => { throw new Error('disk gone') } })
      await expect(put('/b', 'lost')).to.eventually.be.rejected.with.property('message', 'disk gone')
      expect(engine.reserve(adopted.cid), 'released').to.be.true()
      expect(engine.heads.list('').map(h => h.cid.toString())).to.deep.equal([adopted.cid.toString()])
      expect(await value('/b')).to.be.undefined()
      expect(events).to.deep.equal([])
    })

    it('a remote node claiming 0 or 1 needs no link read: it is merged with links nobody has', async () => {
      const nowhere = await node(delta(7, [['/x', '1']]))
      for (const p of [0, 1]) {
        const n = await node(delta(p, [[`/p${p}`, 'ok']]), [nowhere.cid])
        const run = await engine.processRun(n)
        expect(run.merged, `priority ${p}`).to.equal(1)
        expect(run.children.map(String)).to.deep.equal([nowhere.cid.toString()])
        engine.release(nowhere.cid)
      }
      expect(await value('/p0')).to.equal('ok')
      expect(await value('/p1')).to.equal('ok')
      // claiming 2 needs the link: it waits for it
      const two = await node(delta(2, [['/p2', 'waits']]), [nowhere.cid])
      await expect(engine.processRun(two)).to.eventually.be.rejected.with.property('name', 'LinksNeeded')
    })
  })

  describe('what a refused claim says', () => {
    it('names the node, its claim and the greatest bound its links allow, from markers and blocks alike', async () => {
      const marked = await node(delta(3, [['/a', '1']]))
      const markedLow = await node(delta(1, [['/b', '1']]))
      const blockLow = await node(delta(1, [['/c', '1']]))
      const blockHigh = await node(delta(4, [['/d', '1']]))
      // processed markers allowing 4 and 2; blocks at hand allowing 2 and 5
      await ds.put(layout.processedKey(blockKey(marked.cid)), varint.encode(4))
      await ds.put(layout.processedKey(blockKey(markedLow.cid)), varint.encode(2))
      for (const n of [blockLow, blockHigh]) await bs.put(n.cid, n.bytes)
      for (const [links, bound] of [
        [[marked.cid, markedLow.cid, blockLow.cid], 4],
        [[blockLow.cid, markedLow.cid, marked.cid], 4],
        [[blockHigh.cid, marked.cid, blockLow.cid], 5],
        [[blockLow.cid, blockHigh.cid, markedLow.cid], 5]
      ] as Array<[CID[], number]>) {
        const liar = await node(delta(9, [['/l', '1']]), links)
        await expect(engine.processNode(liar)).to.eventually.be.rejected.with.property('message', `Node ${liar.cid} claims priority 9; its links allow at most ${bound}`)
      }
      const alone = await node(delta(3, [['/l', '1']]))
      await expect(engine.processNode(alone)).to.eventually.be.rejected.with.property('message', `Node ${alone.cid} claims priority 3; its links allow at most 1`)
    })
  })

  describe('w/ counters and g/ records at their edges', () => {
    it('a fetch never asked counts a failure but never gives the branch up; the next asked failure does', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      await engine.addRoot(n.cid)
      for (let i = 0; i < 5; i++) expect(await engine.recordFetchFailure(n.cid, { asked: false })).to.be.false()
      // failed fetches held one below maxFetchAttempts (3), none really asked
      expect(await pendingMark(n.cid)).to.deep.equal([1, 2, 0])
      expect(engine.gaveUp).to.equal(0)
      expect(await engine.recordFetchFailure(n.cid, { asked: true })).to.be.true()
      expect((await engine.givenUp()).map(g => g.reason)).to.deep.equal(['no block after 3 fetches'])
    })

    it('the counters of a w/ record stop at 255', async () => {
      engine = make({ maxFetchAttempts: 1000 })
      const n = await node(delta(1, [['/a', 'x']]))
      await ds.put(layout.pendingKey(blockKey(n.cid)), Uint8Array.of(0, 255, 255))
      expect(await engine.recordFetchFailure(n.cid)).to.be.false()
      expect(await pendingMark(n.cid)).to.deep.equal([0, 255, 255])
      await ds.put(layout.pendingKey(blockKey(n.cid)), Uint8Array.of(1, 254, 3))
      await engine.recordFetchFailure(n.cid, { asked: false })
      expect(await pendingMark(n.cid)).to.deep.equal([1, 255, 3])
    })

    it('a g/ record keeps at most 16 refusing peers, and a NUL in the reason cannot pass for them', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      await engine.addRoot(n.cid)
      const peers = Array.from({ length: 20 }, (_, i) => `peer${i}`)
      await engine.giveUp(n.cid, 'no\0block', { refusedBy: peers })
      const [given] = await engine.givenUp()
      expect(given.reason).to.equal('no block')
      expect(given.refusedBy).to.deep.equal(peers.slice(0, 16))
      const m = await node(delta(1, [['/b', 'x']]))
      await engine.addRoot(m.cid)
      await engine.giveUp(m.cid, 'why\0p1,p2')
      const other = (await engine.givenUp()).find(g => g.cid.equals(m.cid))
      expect(other).to.deep.include({ reason: 'why p1,p2' })
      expect(other?.refusedBy).to.equal(undefined)
    })
  })

  describe('what a fetch hands the getter', () => {
    it('the caller\'s onProgress, so the DAG syncer\'s own events reach it', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      const events: string[] = []
      const getter = {
        get: function * (cid: CID, opts?: FetchOptions) {
          opts?.onProgress?.({ type: 'test:asked', detail: cid } as any)
          yield n.bytes
        }
      }
      const fetched = await engine.fetchNode(n.cid, getter, { onProgress: (e: { type: string }) => { events.push(e.type) } })
      expect(fetched.cid.equals(n.cid)).to.be.true()
      expect(events).to.deep.equal(['test:asked'])
    })
  })

  describe('edges the engine run at 1d6ab9d left', () => {
    it('a g/ record without refusing peers is the reason, no peers and whether a processed node links to it; one of an older release ending in a NUL lists no peers and says nothing of links', async () => {
      const n = await node(delta(1, [['/a', 'x']]))
      await engine.addRoot(n.cid)
      await engine.giveUp(n.cid, 'why')
      const key = new Key(`/ns/g${blockKey(n.cid)}`, false)
      expect(dec(await ds.get(key))).to.equal('why\0\0r')
      expect(await engine.givenUp()).to.deep.equal([{ cid: n.cid, reason: 'why', covered: false }])
      await ds.put(key, enc('why\0'))
      expect(await engine.givenUp()).to.deep.equal([{ cid: n.cid, reason: 'why' }])
    })

    it('a branch given up below a processed node is recorded as linked, so an install does not make it a head', async () => {
      const link = await node(delta(1, [['/l', '1']]))
      // claiming 1, it needs no link's claim: merged while its link is missing
      const top = await node(delta(1, [['/t', '1']]), [link.cid])
      await engine.processNode(top)
      await engine.giveUp(link.cid, 'gone', { refusedBy: ['p'] })
      expect(await engine.givenUp()).to.deep.equal([{ cid: link.cid, reason: 'gone', refusedBy: ['p'], covered: true }])
    })

    it('an abort while a run reads a link at hand is an abort, not a missing link', async () => {
      const link = await node(delta(1, [['/l', '1']]))
      const top = await node(delta(2, [['/t', '1']]), [link.cid])
      const controller = new AbortController()
      const local = {
        has: async () => true,
        get: (): never => {
          controller.abort()
          throw new Error('read interrupted')
        }
      }
      await expect(engine.processRun(top, { local, signal: controller.signal })).to.eventually.be.rejected.with.property('name', 'AbortError')
      expect(await engine.isProcessed(top.cid)).to.be.false()
    })
  })

  describe('nodes an installed snapshot merged already (mergedBySnapshot)', () => {
    it('a remote node the snapshot merged is marked processed with its priority, loses its w/ record and head, and is neither merged nor walked', async () => {
      const below = await node(delta(1, [['/below', '1']]))
      const merged = await node(delta(2, [['/m', 'snap']]), [below.cid])
      const asked: string[] = []
      engine = make({
        mergedBySnapshot: async (_tx, n) => {
          asked.push(n.cid.toString())
          return n.cid.equals(merged.cid)
        }
      })
      await engine.heads.load()
      expect(await engine.addRoot(merged.cid)).to.be.true()
      await engine.adoptHead(merged)
      expect(engine.heads.get('', merged.cid)).to.not.be.undefined()
      const run = await engine.processRun(merged)
      expect(asked).to.deep.equal([merged.cid.toString()])
      expect(run).to.deep.include({ children: [], changes: [], merged: 0 })
      expect(events).to.deep.equal([])
      expect(await value('/m')).to.be.undefined()
      expect(await engine.isProcessed(merged.cid)).to.be.true()
      expect(decodePriority(await ds.get(layout.processedKey(blockKey(merged.cid))))).to.equal(2)
      expect(await pendingMark(merged.cid)).to.be.undefined()
      expect(engine.heads.all()).to.deep.equal([])
      // its link is neither recorded nor reserved: nothing walks below it
      expect(await pendingMark(below.cid)).to.be.undefined()
      expect(engine.reserve(below.cid)).to.be.true()
    })

    it('a covered head of an install under way (answer \'head\') is settled as the install would: a head with its priority unless a processed node links to it, its links neither recorded nor walked', async () => {
      const below = await node(delta(1, [['/below', '1']]))
      const head = await node(delta(2, [['/h', 'snap']]), [below.cid])
      const linked = await node(delta(1, [['/l', 'snap']]))
      const top = await node(delta(1, [['/t', '1']]), [linked.cid])
      engine = make({ mergedBySnapshot: async (_tx, n) => n.cid.equals(head.cid) || n.cid.equals(linked.cid) ? 'head' : false })
      await engine.heads.load()
      expect(await engine.addRoot(head.cid)).to.be.true()
      await engine.processRun(head)
      expect(engine.heads.list('').map(h => `${h.cid.toString()}@${h.height}`)).to.deep.equal([`${head.cid.toString()}@2`])
      expect(await value('/h')).to.be.undefined()
      expect(await pendingMark(head.cid)).to.be.undefined()
      expect(await pendingMark(below.cid)).to.be.undefined()
      // merged first, top records linked COVERED: settled, it is no head
      await engine.processNode(top)
      await engine.processNode(linked)
      expect(await engine.isProcessed(linked.cid)).to.be.true()
      expect(engine.heads.list('').map(h => h.cid.toString()).sort()).to.deep.equal([head.cid, top.cid].map(String).sort())
    })

    it('a head that a node settled as merged by a snapshot links to is no head any more (regression: it stayed an extra head below the settled node)', async () => {
      const below = await node(delta(1, [['/below', '1']]))
      const settled = await node(delta(2, [['/s', 'snap']]), [below.cid])
      engine = make({ mergedBySnapshot: async (_tx, n) => n.cid.equals(settled.cid) })
      await engine.heads.load()
      await engine.processNode(below)
      expect(engine.heads.list('').map(h => h.cid.toString())).to.deep.equal([below.cid.toString()])
      await engine.processNode(settled)
      expect(await engine.isProcessed(settled.cid)).to.be.true()
      expect(engine.heads.list('')).to.deep.equal([])
    })

    it('a head that is not the settled node stays; a node the snapshot did not merge is merged as usual', async () => {
      const other = await node(delta(1, [['/o', '1']]))
      const settled = await node(delta(1, [['/s', '1']]))
      engine = make({ mergedBySnapshot: async (_tx, n) => n.cid.equals(settled.cid) })
      await engine.heads.load()
      await engine.adoptHead(other)
      await engine.processNode(settled)
      expect(engine.heads.list('').map(h => h.cid.toString())).to.deep.equal([other.cid.toString()])
      expect(await engine.isProcessed(settled.cid)).to.be.true()
      const plain = await node(delta(1, [['/p', '1']]))
      await engine.processNode(plain)
      expect(await value('/p')).to.equal('1')
      expect(engine.heads.get('', plain.cid)?.height).to.equal(1)
    })

    it('is not asked for local writes, nor for a node processed already', async () => {
      let asked = 0
      engine = make({ mergedBySnapshot: async () => { asked++; return true } })
      await engine.heads.load()
      const r = await put('/a', 'local')
      expect(asked).to.equal(0)
      expect(await value('/a')).to.equal('local')
      expect(r?.changes.map(c => c.key)).to.deep.equal(['/a'])
      // processed already: skipped before the snapshot is asked
      const n = await node(delta(1, [['/b', '1']]))
      await ds.put(layout.processedKey(blockKey(n.cid)), varint.encode(1))
      await ds.put(layout.pendingKey(blockKey(n.cid)), Uint8Array.of(1))
      await engine.processNode(n)
      expect(asked).to.equal(0)
      expect(await pendingMark(n.cid)).to.be.undefined()
    })
  })

  describe('edges the engine run at 40b54e4 left', () => {
    /** A memory datastore whose reads of the listed keys fail, as a broken disk would */
    class FailingDatastore extends MemoryDatastore {
      failing = new Set<string>()
      override async get (key: Key, options?: AbortOptions): Promise<Uint8Array> {
        if (this.failing.has(key.toString())) throw new Error('disk gone')
        return super.get(key, options)
      }

      override async has (key: Key, options?: AbortOptions): Promise<boolean> {
        if (this.failing.has(key.toString())) throw new Error('disk gone')
        return super.has(key, options)
      }
    }

    it('LinksNeeded names itself and says how many links the node waits for', async () => {
      const far = await node(delta(4, [['/x', '1']]))
      const other = await node(delta(1, [['/y', '1']]))
      const top = await node(delta(5, [['/t', '1']]), [far.cid, other.cid])
      const err = await engine.processRun(top).then(() => undefined, (e: Error) => e)
      expect(err).to.be.an.instanceOf(LinksNeeded)
      expect(LinksNeeded.name).to.equal('LinksNeeded')
      expect(err?.message).to.equal(`Node ${top.cid} waits for the blocks of 2 link(s) to check its priority`)
    })

    it('adoptHead fails, adopting nothing, when reading the node\'s w/ record fails other than not found', async () => {
      const failing = new FailingDatastore()
      ds = failing
      engine = make()
      await engine.heads.load()
      const n = await node(delta(1, [['/a', '1']]))
      failing.failing.add(layout.pendingKey(blockKey(n.cid)).toString())
      await expect(engine.adoptHead(n)).to.eventually.be.rejected.with.property('message', 'disk gone')
      expect(engine.heads.all()).to.deep.equal([])
    })

    it('a run whose node below the first fails to stage on a datastore error fails whole: nothing handed back as if its links were missing, nothing committed', async () => {
      const [top, mid, low] = await chain3()
      const failing = new FailingDatastore()
      ds = failing
      engine = make()
      await engine.heads.load()
      // the middle node's priority check reads its link's processed marker: that read fails
      failing.failing.add(layout.processedKey(blockKey(low.cid)).toString())
      await expect(engine.processRun(top, { local: bs })).to.eventually.be.rejected.with.property('message', 'disk gone')
      failing.failing.clear()
      for (const n of [top, mid, low]) expect(await engine.isProcessed(n.cid)).to.be.false()
      expect(events).to.deep.equal([])
      expect(engine.reserve(mid.cid), 'released').to.be.true()
    })

    it('a run leaves the caller\'s reservation of its first node alone, whether its batch lands or not', async () => {
      const [top, mid] = await chain3()
      expect(engine.reserve(top.cid)).to.be.true()
      const run = await engine.processRun(top, { local: bs })
      expect(run.merged).to.equal(3)
      expect(engine.reserve(top.cid), 'still the caller\'s').to.be.false()
      expect(engine.reserve(mid.cid), 'merged below: released').to.be.true()

      ds = new MemoryDatastore()
      const batch = ds.batch.bind(ds)
      ds.batch = () => Object.assign(batch(), { commit: async () => { throw new Error('disk gone') } })
      engine = make()
      await engine.heads.load()
      expect(engine.reserve(top.cid)).to.be.true()
      await expect(engine.processRun(top, { local: bs })).to.eventually.be.rejected.with.property('message', 'disk gone')
      expect(engine.reserve(top.cid), 'still the caller\'s after a failed batch').to.be.false()
      expect(engine.reserve(mid.cid), 'released after a failed batch').to.be.true()
    })
  })

  it('dirty marker, exclusive runs, announced changes, idle', async () => {
    expect(await engine.isDirty()).to.be.false()
    await engine.markDirty()
    expect(await engine.isDirty()).to.be.true()
    await engine.markClean()
    expect(await engine.isDirty()).to.be.false()
    expect(await engine.exclusive(async () => 42)).to.equal(42)
    engine.announceChanges([{ key: '/a' }])
    expect(events).to.deep.equal([{ changes: [{ key: '/a' }], node: undefined }])
    const slow = engine.exclusive(async () => { await new Promise(resolve => setTimeout(resolve, 20)) })
    expect(engine.queued).to.equal(1)
    await engine.idle()
    await slow
    expect(engine.queued).to.equal(0)
  })
})

async function readBlock (bs: MemoryBlockstore, cid: CID): Promise<Uint8Array> {
  const chunks: Uint8Array[] = []
  for await (const c of bs.get(cid)) chunks.push(c)
  return chunks.length === 1 ? chunks[0] : Uint8Array.from(chunks.flatMap(c => [...c]))
}
