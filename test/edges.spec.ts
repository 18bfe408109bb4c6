/**
 * Regression tests for correctness at the edges (issue #12, and the merge
 * rules of #20): aborted commits, non-ASCII keys and DAG names on LevelDB,
 * nodes that repeat a key, deletes larger than maxBatchDeltaSize, DAG names
 * and links from the network, lying priorities and tombstone ids.
 */

import { join } from 'node:path'
import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { LevelBlockstore } from 'blockstore-level'
import { NamespaceDatastore } from 'datastore-core'
import { LevelDatastore } from 'datastore-level'
import { Key } from 'interface-datastore'
import all from 'it-all'
import { CID } from 'multiformats/cid'
import { identity } from 'multiformats/hashes/identity'
import { sha256 } from 'multiformats/hashes/sha2'
import { blockKey } from '../src/codec/block-key.js'
import { decodeDelta, MAX_PRIORITY } from '../src/codec/delta.js'
import { escapeSegment, unescapeSegment } from '../src/crdt/layout.js'
import { createCRDTDatastore, decodeNode } from '../src/index.js'
import { deliver, goNode } from './fixtures/go-nodes.js'
import { stateOf } from './fixtures/network.js'
import { dec, enc, levelReplica, memoryReplica, readBlock, syncReplica, tempDir } from './fixtures/stores.js'
import type { CRDTDatastore } from '../src/index.js'
import type { MemoryReplica } from './fixtures/stores.js'
import type { Batch, Datastore, Pair } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'

const key = (s: string): Key => new Key(s)

/**
 * A datastore whose batches fire `controller` just as they commit, then
 * commit with whatever options they were given: datastore-level then races
 * the write against the aborted signal, so the write lands while the call
 * rejects.
 */
function abortingAtCommit (inner: Datastore, controller: { armed?: AbortController }): Datastore {
  return new Proxy(inner, {
    get (target, prop) {
      if (prop === 'batch') {
        return (): Batch => {
          const batch = target.batch()
          return {
            put: (k, v) => { batch.put(k, v) },
            delete: (k) => { batch.delete(k) },
            commit: async (options?: AbortOptions) => {
              controller.armed?.abort()
              await batch.commit(options)
            }
          }
        }
      }
      const value = (target as any)[prop]
      return typeof value === 'function' ? value.bind(target) : value
    }
  })
}

/** Every block of a replica decoded, with the size of its delta */
async function deltaSizes (blockstore: MemoryBlockstore): Promise<number[]> {
  const sizes: number[] = []
  for await (const stored of blockstore.getAll()) {
    // the memory blockstore lists blocks by multihash, under the raw codec
    const cid = CID.createV1(0x70, stored.cid.multihash)
    const bytes = await readBlock(blockstore, cid)
    const { delta } = decodeNode(cid, bytes)
    // re-encode the Data field exactly as stored: dag-pb keeps it verbatim
    const { decode } = await import('@ipld/dag-pb')
    const data = decode(bytes).Data ?? new Uint8Array(0)
    expect(decodeDelta(data).priority).to.equal(delta.priority)
    sizes.push(data.byteLength)
  }
  return sizes
}

describe('correctness at the edges', () => {
  let replicas: MemoryReplica[] = []
  afterEach(async () => {
    await Promise.all(replicas.map(async r => r.store.stop()))
    replicas = []
  })
  async function replica (init = {}): Promise<MemoryReplica> {
    const r = await memoryReplica({ repairInterval: 0, ...init })
    replicas.push(r)
    return r
  }

  describe('a signal that fires once the atomic commit has started', () => {
    let dir: Awaited<ReturnType<typeof tempDir>>
    beforeEach(async () => { dir = await tempDir('crdt-edges-abort') })
    afterEach(async () => { await dir.remove() })

    it('does not make a put that LevelDB applied report failure; heads stay one after a restart', async () => {
      const control: { armed?: AbortController } = {}
      const level = new LevelDatastore(join(dir.path, 'data'))
      const blocks = new LevelBlockstore(join(dir.path, 'blocks'))
      await level.open()
      await blocks.open()
      let store: CRDTDatastore | undefined = await createCRDTDatastore({ datastore: abortingAtCommit(level, control), blockstore: blocks }, { repairInterval: 0 })
      try {
        await store.put(key('/k'), enc('v1'))
        control.armed = new AbortController()
        const outcome = await store.put(key('/k'), enc('v2'), { signal: control.armed.signal }).then(() => 'done', (err: Error) => err.name)
        control.armed = undefined
        // LevelDB wrote it, so the caller must be told it is done, and memory must agree with disk
        expect(outcome).to.equal('done')
        expect(dec(await store.get(key('/k')))).to.equal('v2')
        expect(store.heads().map(h => h.height)).to.deep.equal([2])
        await store.put(key('/k'), enc('a3'))
        expect(dec(await store.get(key('/k')))).to.equal('a3')
        expect(store.heads().map(h => h.height)).to.deep.equal([3])
        await store.stop()
        store = await createCRDTDatastore({ datastore: level, blockstore: blocks }, { repairInterval: 0 })
        expect(store.heads().map(h => h.height)).to.deep.equal([3])
        expect(dec(await store.get(key('/k')))).to.equal('a3')
      } finally {
        await store?.stop()
        await level.close()
        await blocks.close()
      }
    })

    it('a signal that fired before the commit started changes nothing', async () => {
      const r = await replica()
      await r.store.put(key('/k'), enc('v1'))
      const before: string[] = []
      for await (const { key: k, value } of r.datastore.query({}) as AsyncIterable<Pair>) before.push(`${k.toString()}=${dec(value)}`)
      const controller = new AbortController()
      controller.abort()
      await expect(r.store.put(key('/k'), enc('v2'), { signal: controller.signal })).to.eventually.be.rejected.with.property('name', 'AbortError')
      const after: string[] = []
      for await (const { key: k, value } of r.datastore.query({}) as AsyncIterable<Pair>) after.push(`${k.toString()}=${dec(value)}`)
      expect(after).to.deep.equal(before)
      expect(r.store.heads().map(h => h.height)).to.deep.equal([1])
    })

    it('does not make a remote merge that LevelDB applied report failure', async () => {
      const source = await replica()
      await source.store.put(key('/r'), enc('remote'))
      const control: { armed?: AbortController } = {}
      const level = new LevelDatastore(join(dir.path, 'data'))
      await level.open()
      const blockstore = new MemoryBlockstore()
      const store = await createCRDTDatastore({ datastore: abortingAtCommit(level, control), blockstore }, { repairInterval: 0 })
      try {
        const [head] = source.store.heads()
        const node = decodeNode(head.cid, await readBlock(source.blockstore, head.cid))
        control.armed = new AbortController()
        const engine = (store as any).engine
        const outcome = await engine.processNode(node, { signal: control.armed.signal }).then(() => 'done', (err: Error) => err.name)
        control.armed = undefined
        expect(outcome).to.equal('done')
        expect(dec(await store.get(key('/r')))).to.equal('remote')
        expect(store.heads().map(h => h.cid.toString())).to.deep.equal([head.cid.toString()])
        expect(await engine.isProcessed(head.cid)).to.equal(true)
      } finally {
        await store.stop()
        await level.close()
      }
    })
  })

  describe('keys and DAG names beyond ASCII on LevelDB', () => {
    let dir: Awaited<ReturnType<typeof tempDir>>
    beforeEach(async () => { dir = await tempDir('crdt-edges-unicode') })
    afterEach(async () => { await dir.remove() })

    const keys = ['/a', '/中文', '/Ωmega', '/ÿa', '/\u007fdel', '/😀/x', '/é', '/~']

    it('lists every key, with and without a prefix, and after a reopen', async () => {
      const first = await levelReplica(dir.path, { repairInterval: 0 })
      for (const [i, k] of keys.entries()) await first.store.put(key(k), enc(`v${i}`))
      const expected = keys.map((k, i) => `${k}=v${i}`).sort()
      expect(await stateOf(first.store)).to.deep.equal(expected)
      expect((await all(first.store.queryKeys({ prefix: '/Ω' }))).map(String)).to.deep.equal(['/Ωmega'])
      expect((await all(first.store.queryKeys({ prefix: '/😀' }))).map(String)).to.deep.equal(['/😀/x'])
      // a prefix that ends inside a surrogate pair still matches
      expect((await all(first.store.queryKeys({ prefix: '/\ud83d' }))).map(String)).to.deep.equal(['/😀/x'])
      await first.store.delete(key('/中文'))
      await first.close()
      const second = await levelReplica(dir.path, { repairInterval: 0 })
      try {
        expect(await stateOf(second.store)).to.deep.equal(expected.filter(e => !e.startsWith('/中文')))
      } finally {
        await second.close()
      }
    })

    it('lists every key through a NamespaceDatastore wrapping LevelDB', async () => {
      const level = new LevelDatastore(join(dir.path, 'wrapped'))
      await level.open()
      const blockstore = new MemoryBlockstore()
      let store = await createCRDTDatastore({ datastore: new NamespaceDatastore(level, new Key('/app')), blockstore }, { repairInterval: 0 })
      try {
        for (const [i, k] of keys.entries()) await store.put(key(k), enc(`v${i}`), { dagName: 'ÿ' })
        await store.stop()
        store = await createCRDTDatastore({ datastore: new NamespaceDatastore(level, new Key('/app')), blockstore }, { repairInterval: 0 })
        expect(await stateOf(store)).to.deep.equal(keys.map((k, i) => `${k}=v${i}`).sort())
        expect(store.heads('ÿ').map(h => h.height)).to.deep.equal([keys.length])
      } finally {
        await store.stop()
        await level.close()
      }
    })

    it('keeps the heads of a named DAG whose name starts above U+00FF across a restart', async () => {
      const first = await levelReplica(dir.path, { repairInterval: 0 })
      await first.store.put(key('/x'), enc('1'), { dagName: 'ÿdag' })
      await first.store.put(key('/x'), enc('2'), { dagName: 'ÿdag' })
      await first.store.put(key('/y'), enc('1'), { dagName: '日本/語' })
      await first.close()
      const second = await levelReplica(dir.path, { repairInterval: 0 })
      try {
        expect(second.store.heads('ÿdag').map(h => h.height)).to.deep.equal([2])
        expect(second.store.heads('日本/語').map(h => h.height)).to.deep.equal([1])
        await second.store.put(key('/x'), enc('3'), { dagName: 'ÿdag' })
        expect(second.store.heads('ÿdag').map(h => h.height)).to.deep.equal([3])
        expect(dec(await second.store.get(key('/x')))).to.equal('3')
      } finally {
        await second.close()
      }
    })

    it('migrates a layout-1 store that holds raw non-ASCII keys', async () => {
      const first = await levelReplica(dir.path, { repairInterval: 0 })
      for (const [i, k] of keys.entries()) await first.store.put(key(k), enc(`v${i}`), { dagName: i % 2 === 0 ? '' : 'ÿ' })
      const heads = first.store.heads().map(h => `${h.dagName}:${h.cid.toString()}`)
      await first.close()
      // turn the store back into layout 1: raw keys, version 1 (a scan without prefix sees all)
      const level = new LevelDatastore(join(dir.path, 'data'))
      await level.open()
      const batch = level.batch()
      for await (const { key: k, value } of level.query({}) as AsyncIterable<Pair>) {
        const raw = k.toString()
        if (raw.includes('\u007f')) {
          batch.delete(k)
          batch.put(new Key(unescapeSegment(raw), false), value)
        }
      }
      batch.put(new Key('/crdt/crdt_version'), Uint8Array.of(1))
      await batch.commit()
      await level.close()
      const second = await levelReplica(dir.path, { repairInterval: 0 })
      try {
        expect(await stateOf(second.store)).to.deep.equal(keys.map((k, i) => `${k}=v${i}`).sort())
        expect(second.store.heads().map(h => `${h.dagName}:${h.cid.toString()}`)).to.have.members(heads)
        expect(await second.datastore.get(new Key('/crdt/crdt_version'))).to.deep.equal(Uint8Array.of(2))
      } finally {
        await second.close()
      }
    })

    it('escapes in key order and round-trips', () => {
      const samples = ['', 'a', '~', '\u007f', '\u0080', 'é', 'ÿ', 'Ā', '中', '\uffff', '😀', '\ud800', 'a/b', 'z']
      const byCodePoint = (a: string, b: string): number => {
        const x = Buffer.from(a)
        const y = Buffer.from(b)
        return Buffer.compare(x, y)
      }
      const sorted = samples.filter(s => !/[\ud800-\udfff]/.test(s) || s.length > 1).sort(byCodePoint)
      const escaped = sorted.map(escapeSegment)
      expect([...escaped].sort(byCodePoint)).to.deep.equal(escaped)
      for (const s of samples) {
        expect(unescapeSegment(escapeSegment(s))).to.equal(s)
        expect(/^[\x00-\x7f]*$/.test(escapeSegment(s))).to.equal(true) // eslint-disable-line no-control-regex
      }
    })
  })

  describe('go-style nodes', () => {
    it('a node that puts one key twice counts as its greatest value, whatever the merge order', async () => {
      // n1 puts /k twice ("z" then "a"); n2 is concurrent; n3 tombstones n2's element
      const n1 = await goNode({ elements: [{ key: '/k', value: 'z' }, { key: '/k', value: 'a' }], priority: 1 })
      const n2 = await goNode({ elements: [{ key: '/k', value: 'm' }], priority: 1 })
      const n3 = await goNode({ tombstones: [{ key: '/k', id: blockKey(n2.cid) }], priority: 2, links: [n2.cid] })
      const orders = [[n1, n3], [n3, n1]]
      for (const order of orders) {
        const r = await replica()
        for (const head of order) await deliver(r, [n2], head)
        expect(dec(await r.store.get(key('/k'))), order.map(n => n === n1 ? 'n1' : 'n3').join(',')).to.equal('z')
      }
    })

    it('canonicalises DAG names from the network', async () => {
      const n1 = await goNode({ elements: [{ key: '/d', value: '1' }], priority: 1, dagName: '/x' })
      const n2 = await goNode({ elements: [{ key: '/d', value: '2' }], priority: 2, dagName: 'x//', links: [n1.cid] })
      const r = await replica()
      await deliver(r, [], n1, 'x')
      await deliver(r, [], n2, 'x')
      expect(r.store.heads('x').map(h => h.cid.toString())).to.deep.equal([n2.cid.toString()])
      expect(r.store.heads().map(h => h.dagName)).to.deep.equal(['x'])
      await r.store.put(key('/d'), enc('3'), { dagName: 'x' })
      expect(r.store.heads('x').map(h => h.height)).to.deep.equal([3])
    })

    it('merges a node with unusable links, walks its usable ones and records the refusal', async () => {
      const child = await goNode({ elements: [{ key: '/child', value: 'c' }], priority: 1 })
      const raw = CID.createV1(0x55, await sha256.digest(enc('raw')))
      const ident = CID.createV1(0x70, identity.digest(enc('inline')))
      const short = CID.createV1(0x70, { code: 0x12, size: 4, digest: Uint8Array.of(1, 2, 3, 4), bytes: Uint8Array.of(0x12, 4, 1, 2, 3, 4) } as any)
      const top = await goNode({ elements: [{ key: '/top', value: 't' }], priority: 2, links: [child.cid, raw, ident, short] })
      const r = await replica()
      await deliver(r, [child], top)
      expect(await stateOf(r.store)).to.deep.equal(['/child=c', '/top=t'])
      expect(r.store.heads().map(h => h.cid.toString())).to.deep.equal([top.cid.toString()])
      expect(await r.store.pendingBranches()).to.have.lengthOf(0)
      const refused = await (r.store as any).engine.refusedLinks()
      expect(refused.map((x: any) => [x.cid.toString(), x.refused])).to.deep.equal([[top.cid.toString(), 3]])
    })

    it('keeps a branch whose top claims a priority past 2^53-2, and writes on top of it', async () => {
      const base = await goNode({ elements: [{ key: '/base', value: 'b' }], priority: 1 })
      const mid = await goNode({ elements: [{ key: '/mid', value: 'm' }], priority: BigInt(MAX_PRIORITY), links: [base.cid] })
      const top = await goNode({ elements: [{ key: '/top', value: 't' }], priority: BigInt(MAX_PRIORITY) + 1n, links: [mid.cid] })
      const r = await replica()
      await deliver(r, [base, mid], top)
      // mid over-claims (its link claims 1) and is refused, with what only it links; top claims no more than mid's claim + 1 (saturated)
      expect(await stateOf(r.store)).to.deep.equal(['/top=t'])
      expect((await r.store.givenUpBranches()).map(g => g.cid.toString())).to.deep.equal([mid.cid.toString()])
      await r.store.put(key('/after'), enc('a'))
      expect(r.store.heads().map(h => h.height)).to.deep.equal([MAX_PRIORITY])
      expect(await r.store.isDirty()).to.equal(false)
    })

    it('refuses a node that claims more priority than its processed links allow; writes continue at honest heights', async () => {
      const r = await replica()
      await r.store.put(key('/a'), enc('1'))
      const [head] = r.store.heads()
      const liar = await goNode({ elements: [{ key: '/a', value: 'liar' }], priority: 1000, links: [head.cid] })
      await deliver(r, [], liar)
      expect(dec(await r.store.get(key('/a')))).to.equal('1')
      expect(r.store.heads().map(h => h.height)).to.deep.equal([1])
      const honest = await goNode({ elements: [{ key: '/a', value: 'honest' }], priority: 2, links: [head.cid] })
      await deliver(r, [], honest)
      expect(dec(await r.store.get(key('/a')))).to.equal('honest')
      await r.store.put(key('/b'), enc('2'))
      expect(r.store.heads().map(h => h.height)).to.deep.equal([3])
    })

    it('refuses a tombstone whose id reaches into another key', async () => {
      const r = await replica()
      await r.store.put(key('/a/b'), enc('x'))
      const [head] = r.store.heads()
      const sneaky = await goNode({ tombstones: [{ key: '/a', id: '/b' + blockKey(head.cid) }], priority: 2, links: [head.cid] })
      await deliver(r, [], sneaky)
      expect(dec(await r.store.get(key('/a/b')))).to.equal('x')
      await r.store.delete(key('/a/b'))
      expect(await r.store.has(key('/a/b'))).to.equal(false)
    })
  })

  describe('deletes and maxBatchDeltaSize', () => {
    it('splits a delete of many overwritten keys into nodes within the limit, and replicates it', async () => {
      const a = await replica({ maxBatchDeltaSize: 4096 })
      const b = await replica({ maxBatchDeltaSize: 4096 })
      const keys = Array.from({ length: 20 }, (_, i) => key(`/many/${i}`))
      for (let round = 0; round < 20; round++) {
        const batch = a.store.batch()
        for (const k of keys) batch.put(k, enc(`${round}`))
        await batch.commit()
      }
      await syncReplica(a, b)
      expect(await all(b.store.queryKeys({}))).to.have.lengthOf(20)
      await all(a.store.deleteMany(keys))
      const sizes = await deltaSizes(a.blockstore)
      expect(Math.max(...sizes)).to.be.at.most(4096)
      expect(await all(a.store.queryKeys({}))).to.have.lengthOf(0)
      expect(a.store.heads()).to.have.lengthOf(1)
      await syncReplica(a, b)
      expect(await all(b.store.queryKeys({}))).to.have.lengthOf(0)
    })

    it('spreads the tombstones of one key over several nodes when they alone outgrow the limit', async () => {
      const a = await replica({ maxBatchDeltaSize: 1024 })
      for (let i = 0; i < 60; i++) await a.store.put(key('/one'), enc(`${i}`))
      const b = await replica({ maxBatchDeltaSize: 1024 })
      await syncReplica(a, b)
      await a.store.delete(key('/one'))
      const sizes = await deltaSizes(a.blockstore)
      expect(Math.max(...sizes)).to.be.at.most(1024)
      expect(await a.store.has(key('/one'))).to.equal(false)
      await syncReplica(a, b)
      expect(await b.store.has(key('/one'))).to.equal(false)
    })
  })
})
