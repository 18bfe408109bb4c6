import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { Key } from 'interface-datastore'
import all from 'it-all'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { blockKey } from '../src/codec/block-key.js'
import { heliaDAGSyncer } from '../src/helia/dag-syncer.js'
import { encodeBroadcast, encodeNode } from '../src/index.js'
import { createReplicaNode } from '../src/node/index.js'
import { buildChain, missingCid, StallingBlockstore } from './fixtures/hostile-blocks.js'
import { stateOf, waitFor } from './fixtures/network.js'
import { dagPbNode, delta, element } from './fixtures/pb-writer.js'
import { dec, enc, levelReplica, memoryReplica, syncReplica, tempDir } from './fixtures/stores.js'
import type { CRDTDatastore } from '../src/index.js'
import type { MemoryReplica } from './fixtures/stores.js'
import type { ReplicaNode } from '../src/node/index.js'
import type { Datastore, Pair } from 'interface-datastore'

const key = (s: string): Key => new Key(s)

/** Runs `fn` and resolves with how long it took (ms) */
async function timed (fn: () => Promise<unknown>): Promise<number> {
  const start = Date.now()
  await fn()
  return Date.now() - start
}

/** Every stored entry of a replica's datastore, to show an operation changed nothing */
/** Reopens the LevelDB replica in `dir` and checks it is clean and holds `state` */
async function expectReopensWith (dir: string, state: string[]): Promise<void> {
  const reopened = await levelReplica(dir, { repairInterval: 0 })
  try {
    expect(await stateOf(reopened.store)).to.deep.equal(state)
    expect(await reopened.store.isDirty()).to.equal(false)
  } finally {
    await reopened.close()
  }
}

async function dump (r: { datastore: Datastore }): Promise<string[]> {
  const out: string[] = []
  for await (const { key, value } of r.datastore.query({}) as AsyncIterable<Pair>) out.push(`${key.toString()}=${Buffer.from(value).toString('hex')}`)
  return out.sort()
}

/** A garbage-collect function, exposed at run time */
function gcFunction (): () => void {
  setFlagsFromString('--expose_gc')
  return runInNewContext('gc')
}

describe('hostile input at the API', () => {
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

  it('keys that are not Keys are refused with InvalidKeyError by every method, and nothing changes', async () => {
    const r = await replica()
    await r.store.put(key('/kept'), enc('v'))
    const before = await dump(r)
    const badKeys: any[] = ['/a', null, undefined, 42, { toString: () => '/a' }, ['/a'], Symbol('k')]
    for (const bad of badKeys) {
      const what = String(typeof bad === 'symbol' ? 'symbol' : JSON.stringify(bad))
      await expect(r.store.put(bad, enc('v')), `put ${what}`).to.eventually.be.rejected.with.property('name', 'InvalidKeyError')
      await expect(r.store.get(bad), `get ${what}`).to.eventually.be.rejected.with.property('name', 'InvalidKeyError')
      await expect(r.store.has(bad), `has ${what}`).to.eventually.be.rejected.with.property('name', 'InvalidKeyError')
      await expect(r.store.delete(bad), `delete ${what}`).to.eventually.be.rejected.with.property('name', 'InvalidKeyError')
      expect(() => { r.store.batch().put(bad, enc('v')) }, `batch.put ${what}`).to.throw().with.property('name', 'InvalidKeyError')
      expect(() => { r.store.batch().delete(bad) }, `batch.delete ${what}`).to.throw().with.property('name', 'InvalidKeyError')
      await expect(all(r.store.putMany([{ key: bad, value: enc('v') }])), `putMany ${what}`).to.eventually.be.rejected.with.property('name', 'InvalidKeyError')
      await expect(all(r.store.deleteMany([bad])), `deleteMany ${what}`).to.eventually.be.rejected.with.property('name', 'InvalidKeyError')
    }
    expect(await dump(r)).to.deep.equal(before)
    expect(dec(await r.store.get(key('/kept')))).to.equal('v')
  })

  it('values that are not Uint8Array are refused with InvalidValueError, and nothing changes', async () => {
    const r = await replica()
    await r.store.put(key('/kept'), enc('v'))
    const before = await dump(r)
    const badValues: any[] = ['text', 42, null, undefined, new ArrayBuffer(4), new Uint16Array(2), new DataView(new ArrayBuffer(2)), [1, 2, 3], { length: 1, 0: 1 }]
    for (const bad of badValues) {
      const what = Object.prototype.toString.call(bad)
      await expect(r.store.put(key('/kept'), bad), `put ${what}`).to.eventually.be.rejected.with.property('name', 'InvalidValueError')
      expect(() => { r.store.batch().put(key('/kept'), bad) }, `batch.put ${what}`).to.throw().with.property('name', 'InvalidValueError')
      await expect(all(r.store.putMany([{ key: key('/kept'), value: bad }])), `putMany ${what}`).to.eventually.be.rejected.with.property('name', 'InvalidValueError')
    }
    expect(await dump(r)).to.deep.equal(before)
    // a Buffer is a Uint8Array
    await r.store.put(key('/buffer'), Buffer.from('node buffer'))
    expect(dec(await r.store.get(key('/buffer')))).to.equal('node buffer')
  })

  it('a value over the batch limit is refused with ValueTooLargeError; one exactly at the limit is written', async () => {
    const max = 1024
    const r = await replica({ maxBatchDeltaSize: max })
    // a delta of one element: 11 bytes of priority overhead, then tag, length, key field and value field
    const fits = (n: number): boolean => {
      const inner = 2 + '/big'.length + 1 + (n < 128 ? 1 : 2) + n
      return 11 + 1 + (inner < 128 ? 1 : 2) + inner <= max
    }
    let largest = 0
    while (fits(largest + 1)) largest++
    await r.store.put(key('/big'), new Uint8Array(largest).fill(1))
    expect((await r.store.get(key('/big'))).byteLength).to.equal(largest)
    const before = await dump(r)
    await expect(r.store.put(key('/big'), new Uint8Array(largest + 1))).to.eventually.be.rejected.with.property('name', 'ValueTooLargeError')
    expect(() => { r.store.batch().put(key('/big'), new Uint8Array(max * 4)) }).to.throw().with.property('name', 'ValueTooLargeError')
    await expect(all(r.store.putMany([{ key: key('/big'), value: new Uint8Array(10 * 1024 * 1024) }]))).to.eventually.be.rejected.with.property('name', 'ValueTooLargeError')
    expect(await dump(r)).to.deep.equal(before)
  })

  it('keys with odd characters round-trip, replicate and survive a reopen', async () => {
    const odd = ['/a b/ü/%00', '/nul\u0000byte', '/emoji/🦄/☃', '/quotes/"\'`', '/back\\slash', '/new\nline\ttab', '/colon:semi;comma,', '/v', '/p', '/x/v', '/x', '/' + 'long'.repeat(2500), '/deep' + '/d'.repeat(200)]
    const dir = await tempDir('crdt-hostile-keys')
    try {
      const a = await levelReplica(dir.path, { repairInterval: 0 })
      const b = await memoryReplica({ repairInterval: 0 })
      replicas.push(b)
      for (const [i, k] of odd.entries()) await a.store.put(key(k), enc(`value ${i}`))
      // keys are cleaned as go-datastore cleans them
      await a.store.put(key('/a//double//'), enc('cleaned'))
      expect(dec(await a.store.get(key('/a/double')))).to.equal('cleaned')
      for (const [i, k] of odd.entries()) {
        expect(dec(await a.store.get(key(k))), JSON.stringify(k)).to.equal(`value ${i}`)
        expect(await a.store.has(key(k))).to.equal(true)
      }
      const listed = (await all(a.store.query({}))).map(p => p.key.toString()).sort()
      expect(listed).to.deep.equal([...odd, '/a/double'].sort())
      expect((await all(a.store.query({ prefix: '/x' }))).map(p => p.key.toString()).sort()).to.deep.equal(['/x', '/x/v'])
      await a.store.delete(key('/x'))
      expect(await a.store.has(key('/x/v'))).to.equal(true)
      expect(await a.store.has(key('/x'))).to.equal(false)

      const fromLevel = { store: a.store, datastore: a.datastore as any, blockstore: a.blockstore as any }
      await syncReplica(fromLevel, b)
      const state = await stateOf(a.store)
      expect(await stateOf(b.store)).to.deep.equal(state)
      await a.close()
      await expectReopensWith(dir.path, state)
    } finally {
      await dir.remove()
    }
  })

  it('after stop() every write and replication method throws DatastoreStoppedError, reads serve the local state, and the stored state is intact', async () => {
    const dir = await tempDir('crdt-hostile-stop')
    try {
      const r = await levelReplica(dir.path, { repairInterval: 0 })
      await r.store.put(key('/a'), enc('1'))
      const early = r.store.batch()
      early.put(key('/b'), enc('2'))
      const state = await stateOf(r.store)
      await r.store.stop()
      const s: CRDTDatastore = r.store
      const calls: Array<[string, () => unknown]> = [
        ['put', async () => s.put(key('/a'), enc('x'))],
        ['delete', async () => s.delete(key('/a'))],
        ['putMany', async () => all(s.putMany([{ key: key('/a'), value: enc('x') }]))],
        ['deleteMany', async () => all(s.deleteMany([key('/a')]))],
        ['batch', () => s.batch()],
        ['batch.commit from before stop', async () => early.commit()],
        ['repair', async () => s.repair()],
        ['pendingBranches', async () => s.pendingBranches()],
        ['isDirty', async () => s.isDirty()],
        ['markDirty', async () => s.markDirty()],
        ['purgeDAG', async () => s.purgeDAG('x')],
        ['receive', async () => s.receive(Uint8Array.of(1))],
        ['printDAG', async () => s.printDAG()]
      ]
      for (const [name, call] of calls) {
        let error: any
        try {
          await call()
        } catch (err) {
          error = err
        }
        expect(error?.name, name).to.equal('DatastoreStoppedError')
      }
      // reads come from the local state (Helia reads its datastore before it starts it)
      expect(await stateOf(s)).to.deep.equal(state)
      expect(dec(await s.get(key('/a')))).to.equal('1')
      expect(await s.has(key('/b'))).to.equal(false)
      await r.store.stop()
      await r.datastore.close()
      await r.blockstore.close()
      await expectReopensWith(dir.path, state)
    } finally {
      await dir.remove()
    }
  })

  it('writes racing stop() either land durably or fail with DatastoreStoppedError', async () => {
    const dir = await tempDir('crdt-hostile-race')
    try {
      const r = await levelReplica(dir.path, { repairInterval: 0 })
      const writes = Array.from({ length: 50 }, async (_, i) => r.store.put(key(`/race/${i}`), enc(`${i}`)).then(() => 'ok', (err: any) => err.name))
      const stopping = r.store.stop()
      const late = await r.store.put(key('/race/late'), enc('late')).then(() => 'ok', (err: any) => err.name)
      const outcomes = await Promise.all(writes)
      await stopping
      expect(late).to.equal('DatastoreStoppedError')
      expect(outcomes.every(o => o === 'ok' || o === 'DatastoreStoppedError'), outcomes.join()).to.equal(true)
      await r.datastore.close()
      await r.blockstore.close()
      const reopened = await levelReplica(dir.path, { repairInterval: 0 })
      const keys = (await all(reopened.store.queryKeys({}))).map(k => k.toString())
      const acknowledged = outcomes.flatMap((o, i) => o === 'ok' ? [`/race/${i}`] : [])
      expect(keys.sort()).to.deep.equal(acknowledged.sort())
      expect(await reopened.store.isDirty()).to.equal(false)
      await reopened.close()
    } finally {
      await dir.remove()
    }
  })
})

describe('hostile network input', function () {
  this.timeout(120_000)
  let replicas: MemoryReplica[] = []
  afterEach(async () => {
    await Promise.all(replicas.map(async r => r.store.stop()))
    replicas = []
  })
  async function stalling (init = {}): Promise<MemoryReplica & { blockstore: StallingBlockstore }> {
    const blockstore = new StallingBlockstore()
    const r = await memoryReplica({ repairInterval: 0, dagSyncerTimeout: 300, ...init }, { blockstore })
    const out = { ...r, blockstore }
    replicas.push(out)
    return out
  }

  it('oversized and junk broadcasts are skipped without fetching anything', async () => {
    const r = await stalling()
    await r.store.put(key('/kept'), enc('v'))
    const before = await dump(r)
    const heads = await Promise.all(Array.from({ length: 2000 }, async (_, i) => ({ cid: await missingCid(`over-${i}`), dagName: '' })))
    const random = new Uint8Array(4 * 1024 * 1024)
    for (let i = 0; i < random.length; i++) random[i] = (i * 2654435761) >>> 24
    const elapsed = await timed(async () => {
      await r.store.receive(encodeBroadcast(heads))
      await r.store.receive(random)
      await r.store.receive(new Uint8Array(0))
      await r.store.receive(encodeBroadcast([{ cid: CID.createV1(0x55, await sha256.digest(enc('raw'))), dagName: '' }]))
    })
    expect(r.blockstore.stalls).to.equal(0)
    expect(elapsed).to.be.lessThan(5000)
    expect(await dump(r)).to.deep.equal(before)
  })

  it('a broadcast head that never arrives is given up after dagSyncerTimeout and leaves nothing behind', async () => {
    const r = await stalling({ repairInterval: 100 })
    const missing = await missingCid('head')
    let putDuring = 0
    const elapsed = await timed(async () => {
      const receiving = r.store.receive(encodeBroadcast([{ cid: missing, dagName: '' }]))
      // the replica keeps serving while the fetch waits
      putDuring = await timed(async () => r.store.put(key('/during'), enc('served')))
      expect(dec(await r.store.get(key('/during')))).to.equal('served')
      await receiving
    })
    expect(r.blockstore.stalls).to.equal(1)
    expect(r.blockstore.aborted).to.equal(1)
    expect(elapsed).to.be.within(250, 3000)
    expect(putDuring).to.be.lessThan(250)
    // go-ds-crdt #279-style bookkeeping must not keep a head that was never fetched
    expect((await r.store.pendingBranches()).map(String)).to.deep.equal([])
    await new Promise(resolve => setTimeout(resolve, 300))
    expect(await r.store.isDirty()).to.equal(false)
    expect(r.store.heads()).to.have.lengthOf(1)
  })

  it('links to a block that never arrives: the node waits for it (its priority is checked against the link\'s claim) and stays pending, the store serves, repair finishes once it arrives', async () => {
    const r = await stalling()
    const later = await encodeNode({ elements: [{ key: '/below', id: '', value: enc('late') }], tombstones: [], priority: 1, dagName: '' }, [])
    const top = await encodeNode({ elements: [{ key: '/above', id: '', value: enc('here') }], tombstones: [], priority: 2, dagName: '' }, [later.cid])
    await r.blockstore.put(top.cid, top.bytes)
    const elapsed = await timed(async () => r.store.receive(encodeBroadcast([{ cid: top.cid, dagName: '' }])))
    expect(elapsed).to.be.lessThan(3000)
    expect(await r.store.has(key('/above'))).to.equal(false)
    expect((await r.store.pendingBranches()).map(String)).to.deep.equal([top.cid.toString()])
    expect(await r.store.isDirty()).to.equal(true)
    // the announced head was adopted (a fresh replica): a write links it
    await r.store.put(key('/mine'), enc('still writable'))
    expect(r.store.heads().map(h => h.height)).to.deep.equal([3])
    // the write linked the unmerged head, which it walks again (and waits for again)
    await waitFor(() => r.store.stats().walks === 0, 5000, 'the walk the write started to end')
    const failed = await timed(async () => {
      await expect(r.store.repair()).to.eventually.be.rejected.with.property('name', 'BlockFetchError')
    })
    expect(failed).to.be.lessThan(3000)
    expect(await r.store.isDirty()).to.equal(true)
    await r.blockstore.put(later.cid, later.bytes)
    await r.store.repair()
    expect(await r.store.isDirty()).to.equal(false)
    expect(await r.store.pendingBranches()).to.have.lengthOf(0)
    expect(await stateOf(r.store)).to.deep.equal(['/above=here', '/below=late', '/mine=still writable'])
  })

  it('link-less blocks claiming priority 2^64-1 or 2^53-1 claim more than their links allow and are skipped for good', async () => {
    const r = await stalling()
    for (const priority of [2n ** 64n - 1n, 2n ** 53n - 1n, 2n ** 53n]) {
      const bytes = dagPbNode(delta([element(`/absurd/${priority}`, '', 'x')], [], priority), [])
      const cid = CID.createV1(0x70, await sha256.digest(bytes))
      await r.blockstore.put(cid, bytes)
      await r.store.receive(encodeBroadcast([{ cid, dagName: '' }]))
    }
    expect(await all(r.store.queryKeys({}))).to.have.lengthOf(0)
    expect(await r.store.pendingBranches()).to.have.lengthOf(0)
    expect(await r.store.isDirty()).to.equal(false)
    expect(r.store.heads()).to.have.lengthOf(0)
    await r.store.put(key('/fine'), enc('ok'))
    expect(r.store.heads()[0].height).to.equal(1)
  })

  it('a write on top of a node at the greatest priority saturates instead of failing, and replicates', async () => {
    const a = await stalling()
    const b = await stalling()
    const { MAX_PRIORITY } = await import('../src/codec/delta.js')
    // a link no replica can read (an identity CID, refused at decode) leaves its claim unknowable, so it is not checked (see engine.ts)
    const { identity } = await import('multiformats/hashes/identity')
    const unreadable = CID.createV1(0x70, identity.digest(enc('inline')))
    const base = await encodeNode({ elements: [{ key: '/base', id: '', value: enc('b') }], tombstones: [], priority: 1, dagName: '' }, [])
    const top = await encodeNode({ elements: [{ key: '/top', id: '', value: enc('t') }], tombstones: [], priority: MAX_PRIORITY, dagName: '' }, [base.cid, unreadable])
    await a.blockstore.put(base.cid, base.bytes)
    await a.blockstore.put(top.cid, top.bytes)
    await a.store.receive(encodeBroadcast([{ cid: top.cid, dagName: '' }]))
    expect(dec(await a.store.get(key('/top')))).to.equal('t')
    expect(dec(await a.store.get(key('/base')))).to.equal('b')
    expect(await a.store.isDirty()).to.equal(false)
    await a.store.put(key('/honest'), enc('h'))
    expect(a.store.heads().map(h => h.height)).to.deep.equal([MAX_PRIORITY])
    await syncReplica(a, b)
    expect(await stateOf(b.store)).to.deep.equal(['/base=b', '/honest=h', '/top=t'])
    expect(await b.store.pendingBranches()).to.have.lengthOf(0)
  })

  it('re-delivering the same head a thousand times processes it once', async () => {
    const source = await stalling()
    const r = await stalling()
    await source.store.put(key('/once'), enc('1'))
    let processed = 0
    r.store.addEventListener('processed', () => { processed++ })
    await syncReplica(source, r)
    const payload = encodeBroadcast(source.store.heads().map(h => ({ cid: h.cid, dagName: h.dagName })))
    const before = await dump(r)
    for (let i = 0; i < 1000; i++) await r.store.receive(payload)
    expect(processed).to.equal(1)
    expect(await dump(r)).to.deep.equal(before)
  })

  it('a chain of 5,000 nodes delivered at once is walked with bounded memory', async function () {
    this.timeout(300_000)
    const gc = gcFunction()
    const dir = await tempDir('crdt-hostile-deep')
    const length = 5000
    try {
      const blocks = new MemoryBlockstore()
      const top = await buildChain(blocks, length)
      const r = await levelReplica(dir.path, { repairInterval: 0, dagSyncerTimeout: 5000 })
      try {
        // every block is there before the walk starts
        for await (const { cid, bytes } of blocks.getAll()) {
          const chunks: Uint8Array[] = []
          for await (const chunk of bytes) chunks.push(chunk)
          await r.blockstore.put(cid, chunks[0])
        }
        gc()
        const baseline = process.memoryUsage().heapUsed
        let peak = baseline
        let maxQueued = 0
        const sampler = setInterval(() => {
          peak = Math.max(peak, process.memoryUsage().heapUsed)
          maxQueued = Math.max(maxQueued, r.store.stats().queuedJobs)
        }, 20)
        try {
          await r.store.receive(encodeBroadcast([{ cid: top, dagName: '' }]))
        } finally {
          clearInterval(sampler)
        }
        gc()
        const retained = process.memoryUsage().heapUsed - baseline
        expect(await all(r.store.queryKeys({ prefix: '/deep' }))).to.have.lengthOf(length)
        expect(r.store.heads().map(h => [h.cid.toString(), h.height])).to.deep.equal([[top.toString(), length]])
        expect(await r.store.pendingBranches()).to.have.lengthOf(0)
        // every node came from the DAG syncer: the head (fetched for the broadcast) and the rest (walked)
        expect(r.store.stats().fetchedBlocks).to.equal(length)
        // a chain keeps one fetch and one merge in flight, not the whole DAG
        expect(maxQueued).to.be.at.most(4)
        expect(peak - baseline, 'heap growth during the walk').to.be.lessThan(96 * 1024 * 1024)
        expect(retained, 'heap retained after the walk').to.be.lessThan(24 * 1024 * 1024)
      } finally {
        await r.close()
      }
    } finally {
      await dir.remove()
    }
  })

  it('a walk stops using a session that failed and fetches the rest without it', async () => {
    const source = new MemoryBlockstore()
    const top = await buildChain(source, 30, '/chain')
    let sessionGets = 0
    // a blockstore whose sessions never answer (their providers are gone),
    // and whose blocks count as remote (a walk cannot merge them as local)
    class DeadSessions extends MemoryBlockstore {
      override has (): boolean {
        return false
      }

      createSession (): { get(cid: CID, options?: { signal?: AbortSignal }): AsyncGenerator<Uint8Array> } {
        return {
          // eslint-disable-next-line require-yield -- a session that never answers: its get only fails
          async * get (_cid, options) {
            sessionGets++
            await new Promise((_resolve, reject) => {
              if (options?.signal == null) { reject(new Error('no signal')); return }
              options.signal.addEventListener('abort', () => { reject(new Error('aborted')) }, { once: true })
            })
          }
        }
      }
    }
    const blockstore = new DeadSessions()
    for await (const { cid, bytes } of source.getAll()) {
      const chunks: Uint8Array[] = []
      for await (const chunk of bytes) chunks.push(chunk)
      await blockstore.put(cid, chunks[0])
    }
    const r = await memoryReplica({ repairInterval: 0, dagSyncerTimeout: 200, numWorkers: 1 }, { blockstore })
    replicas.push(r)
    const elapsed = await timed(async () => r.store.receive(encodeBroadcast([{ cid: top, dagName: '' }])))
    expect(await all(r.store.queryKeys({ prefix: '/chain' }))).to.have.lengthOf(30)
    expect(sessionGets).to.equal(1)
    // one session timeout, not one per node
    expect(elapsed).to.be.lessThan(2000)
  })

  it('a node linking 2,000 children is walked completely', async () => {
    // nothing stalls here: a wide deadline keeps a loaded machine's pauses
    // between arrivals from ending the children's shared deadline
    const r = await stalling({ dagSyncerTimeout: 10_000 })
    const children = []
    for (let i = 0; i < 2000; i++) {
      const child = await encodeNode({ elements: [{ key: `/wide/${i}`, id: '', value: enc(`${i}`) }], tombstones: [], priority: 1, dagName: '' }, [])
      await r.blockstore.put(child.cid, child.bytes)
      children.push(child.cid)
    }
    const nothing = blockKey(await missingCid('nothing'))
    const top = await encodeNode({ elements: [], tombstones: [{ key: '/wide/0', id: nothing, value: new Uint8Array(0) }], priority: 2, dagName: '' }, children)
    await r.blockstore.put(top.cid, top.bytes)
    await r.store.receive(encodeBroadcast([{ cid: top.cid, dagName: '' }]))
    expect(await all(r.store.queryKeys({ prefix: '/wide' }))).to.have.lengthOf(2000)
    expect(r.store.heads().map(h => h.cid.toString())).to.deep.equal([top.cid.toString()])
    expect(await r.store.pendingBranches()).to.have.lengthOf(0)
  })
})

describe('fetching blocks through Helia after crashes and partitions', function () {
  this.timeout(60_000)
  let nodes: ReplicaNode[] = []
  afterEach(async () => {
    await Promise.all(nodes.map(async n => n.stop()))
    nodes = []
  })
  async function node (): Promise<ReplicaNode> {
    const n = await createReplicaNode({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    nodes.push(n)
    return n
  }
  async function block (text: string): Promise<[CID, Uint8Array]> {
    const bytes = enc(`${text} ${Math.random()}`)
    return [CID.createV1(0x55, await sha256.digest(bytes)), bytes]
  }
  async function fetch (from: ReplicaNode, cid: CID, ms: number): Promise<number> {
    const syncer = heliaDAGSyncer(from)
    return timed(async () => {
      const chunks: Uint8Array[] = []
      for await (const chunk of syncer.get(cid, { signal: AbortSignal.timeout(ms) })) chunks.push(chunk)
      expect(chunks.length).to.be.greaterThan(0)
    })
  }

  it('gets a block the only connected peer obtains while we wait for it', async () => {
    const [holder, wanter] = [await node(), await node()]
    await wanter.libp2p.dial(holder.libp2p.getMultiaddrs()[0])
    const [cid, bytes] = await block('later')
    const waiting = fetch(wanter, cid, 10_000)
    await new Promise(resolve => setTimeout(resolve, 300))
    await holder.blockstore.put(cid, bytes)
    expect(await waiting).to.be.lessThan(5000)
  })

  it('gets a block on a second try after a first try timed out', async () => {
    const [holder, wanter] = [await node(), await node()]
    await wanter.libp2p.dial(holder.libp2p.getMultiaddrs()[0])
    const [cid, bytes] = await block('retry')
    await expect(fetch(wanter, cid, 500)).to.eventually.be.rejected()
    await holder.blockstore.put(cid, bytes)
    expect(await fetch(wanter, cid, 10_000)).to.be.lessThan(5000)
  })

  it('gets a block from a peer that connects while we wait, and from the one holder among many peers', async () => {
    const holder = await node()
    const wanter = await node()
    const [cid, bytes] = await block('reconnect')
    await holder.blockstore.put(cid, bytes)
    const waiting = fetch(wanter, cid, 10_000)
    await new Promise(resolve => setTimeout(resolve, 300))
    await wanter.libp2p.dial(holder.libp2p.getMultiaddrs()[0])
    expect(await waiting).to.be.lessThan(5000)
    // six peers without the block, connected before the holder
    const [other, otherBytes] = await block('rare')
    const second = await node()
    for (let i = 0; i < 6; i++) await second.libp2p.dial((await node()).libp2p.getMultiaddrs()[0])
    await second.libp2p.dial(holder.libp2p.getMultiaddrs()[0])
    await holder.blockstore.put(other, otherBytes)
    expect(await fetch(second, other, 10_000)).to.be.lessThan(8000)
  })
})
