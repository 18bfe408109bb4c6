import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { PayloadQueue } from '../src/engine/payload-queue.js'
import { encodeBroadcast } from '../src/index.js'
import { TestNetwork, convergeHeads, stateOf, waitFor } from './fixtures/network.js'
import { dagPbNode, delta, element } from './fixtures/pb-writer.js'
import { dec, enc, memoryReplica, tempDir } from './fixtures/stores.js'
import type { Broadcaster } from '../src/index.js'

const key = (s: string): Key => new Key(s)

describe('replication', function () {
  this.timeout(120_000)
  let net: TestNetwork

  afterEach(async () => {
    await net?.stop()
  })

  it('with multiHeadProcessing off, queued announcements are fetched ahead while earlier ones merge', async () => {
    const writer = await memoryReplica({ repairInterval: 0 })
    const payloads: Uint8Array[] = []
    for (let i = 0; i < 12; i++) {
      await writer.store.put(key(`/ahead/${i}`), enc(`${i}`))
      payloads.push(encodeBroadcast(writer.store.heads().map(h => ({ cid: h.cid, dagName: h.dagName }))))
    }
    // every announcement is queued before the reader starts; each block takes 50 ms to arrive
    const inbox = new PayloadQueue(100)
    for (const p of payloads) inbox.push(p)
    const broadcaster: Broadcaster = { broadcast: async () => {}, next: async (o) => inbox.next(o) }
    let inFlight = 0
    let maxInFlight = 0
    const slow = {
      async * get (cid: CID, options?: { signal?: AbortSignal }) {
        inFlight++
        maxInFlight = Math.max(maxInFlight, inFlight)
        try {
          await new Promise(resolve => setTimeout(resolve, 50))
          options?.signal?.throwIfAborted()
          yield * writer.blockstore.get(cid)
        } finally {
          inFlight--
        }
      },
      put: async (cid: CID, bytes: Uint8Array) => writer.blockstore.put(cid, bytes),
      has: async () => false
    }
    const reader = await memoryReplica({ repairInterval: 0, numWorkers: 2, multiHeadProcessing: false }, { blockstore: slow, broadcaster })
    try {
      await waitFor(async () => (await stateOf(reader.store)).length === 12, 20_000, 'the reader to merge all 12 puts')
      expect(await stateOf(reader.store)).to.deep.equal(await stateOf(writer.store))
      // one fetch at a time without the look-ahead; up to 4 x numWorkers heads ahead with it
      expect(maxInFlight).to.be.greaterThan(1)
      expect(maxInFlight).to.be.at.most(1 + 2 * 4)
    } finally {
      await reader.store.stop()
      inbox.close()
      await writer.store.stop()
    }
  })

  it('15 replicas: one put reaches all', async () => {
    net = new TestNetwork({ seed: 1 })
    const replicas = await net.addMany(15)
    await replicas[3].store.put(key('/one'), enc('everywhere'))
    const state = await net.converge({ check: s => s.length === 1 })
    expect(state).to.deep.equal(['/one=everywhere'])
    expect(await convergeHeads(net)).to.deep.equal(replicas[3].store.heads().map(h => `${h.cid}@1`))
  })

  it('15 replicas: 50 random keys from random replicas, then overwritten from random replicas', async () => {
    net = new TestNetwork({ seed: 2 })
    const replicas = await net.addMany(15)
    const pick = (): typeof replicas[number] => replicas[Math.floor(net.random() * replicas.length)]
    for (let i = 0; i < 50; i++) await pick().store.put(key(`/k/${i}`), enc(`first-${i}`))
    await net.converge({ check: s => s.length === 50 })
    for (let i = 0; i < 50; i++) await pick().store.put(key(`/k/${i}`), enc(`second-${i}`))
    const state = await net.converge({ check: s => s.every(e => e.includes('=second-')) })
    expect(state).to.have.lengthOf(50)
    // 100 writes: the heads every replica ends with are the same, and a later write replaces them all
    const heads = await convergeHeads(net)
    const top = Math.max(...heads.map(h => Number(h.split('@')[1])))
    await replicas[0].store.put(key('/k/0'), enc('third'))
    const [last] = replicas[0].store.heads()
    expect(last.height).to.equal(top + 1)
    expect(await convergeHeads(net)).to.deep.equal([`${last.cid}@${top + 1}`])
  })

  it('15 replicas writing one key 50 times concurrently agree, then a final write wins everywhere', async () => {
    net = new TestNetwork({ seed: 3 })
    const replicas = await net.addMany(15)
    await Promise.all(replicas.map(async (r, ri) => {
      for (let i = 0; i < 50; i++) await r.store.put(key('/contended'), enc(`r${ri}-${i}`))
    }))
    const agreed = await net.converge({ check: s => s.length === 1, timeout: 60_000 })
    expect(agreed[0]).to.match(/^\/contended=r\d+-\d+$/)
    const heads = await convergeHeads(net)
    expect(heads.length).to.be.greaterThan(1)
    // once everyone agrees, a write on top of the merged heads beats every earlier one and replaces every head
    await replicas[7].store.put(key('/contended'), enc('final'))
    expect(await net.converge({ check: s => s[0] === '/contended=final' })).to.deep.equal(['/contended=final'])
    const [final] = replicas[7].store.heads()
    expect(await convergeHeads(net)).to.deep.equal([`${final.cid}@${final.height}`])
  })

  it('catch-up: 50 writes whose broadcasts were all dropped arrive with one delivered write', async () => {
    // every write announced on its own, so every one of them is dropped
    net = new TestNetwork({ seed: 4, init: { rebroadcastInterval: 3_600_000, announceInterval: 0 } })
    const replicas = await net.addMany(4)
    net.faults.drop = 1
    for (let i = 0; i < 50; i++) await replicas[0].store.put(key(`/c/${i}`), enc(`${i}`))
    await new Promise(resolve => setTimeout(resolve, 100))
    expect(await stateOf(replicas[1].store)).to.have.lengthOf(0)
    net.faults.drop = 0
    await replicas[0].store.put(key('/c/last'), enc('last'))
    const state = await net.converge({ check: s => s.length === 51 })
    expect(state).to.include('/c/0=0')
    expect(state).to.include('/c/49=49')
    expect(net.counts.dropped, 'broadcasts dropped').to.be.at.least(50 * 3)
    expect(await convergeHeads(net)).to.deep.equal(replicas[0].store.heads().map(h => `${h.cid}@51`))
  })

  it('go-ds-crdt #238 across a partition: put, put, delete vs put converge after healing', async () => {
    net = new TestNetwork({ seed: 5 })
    const [a, b, c] = await net.addMany(3)
    net.partition([0, 2], [1])
    await a.store.put(key('/k'), enc('a-1'))
    await a.store.put(key('/k'), enc('a-2'))
    await a.store.delete(key('/k'))
    await b.store.put(key('/k'), enc('b-1'))
    await waitFor(async () => c.store.heads()[0]?.height === 3, 5000, 'c to merge the delete')
    expect(await c.store.has(key('/k'))).to.equal(false)
    expect(dec(await b.store.get(key('/k')))).to.equal('b-1')
    net.heal()
    expect(await net.converge({ check: s => s.length === 1 })).to.deep.equal(['/k=b-1'])
    // a's delete (height 3) and b's put (height 1) are both heads everywhere
    expect((await convergeHeads(net)).map(h => h.split('@')[1]).sort()).to.deep.equal(['1', '3'])
  })

  it('deletes and auto-committing batches replicate, and events fire on every replica', async () => {
    net = new TestNetwork({ seed: 6, init: { maxBatchDeltaSize: 2048 } })
    const replicas = await net.addMany(4)
    const putEvents = replicas.map(() => new Set<string>())
    const deleteEvents = replicas.map(() => new Set<string>())
    replicas.forEach((r, i) => {
      r.store.addEventListener('put', evt => { putEvents[i].add(evt.detail.key.toString()) })
      r.store.addEventListener('delete', evt => { deleteEvents[i].add(evt.detail.key.toString()) })
    })
    const batch = replicas[1].store.batch()
    for (let i = 0; i < 100; i++) batch.put(key(`/b/${i}`), new Uint8Array(100).fill(i))
    await batch.commit()
    expect(replicas[1].store.heads()[0].height).to.be.greaterThan(3)
    await net.converge({ check: s => s.length === 100 })
    await replicas[2].store.delete(key('/b/5'))
    const state = await net.converge({ check: s => s.length === 99 })
    expect(state.some(e => e.startsWith('/b/5='))).to.equal(false)
    for (let i = 0; i < replicas.length; i++) {
      expect(putEvents[i].size, `put events on replica ${i}`).to.equal(100)
      expect([...deleteEvents[i]], `delete events on replica ${i}`).to.deep.equal(['/b/5'])
    }
  })

  it('lossy run: 5 replicas, 30% drops, duplicates, reordering, 10% failed fetches, 500 random ops', async () => {
    // keys /l/* are put, deleted and batched; keys /p/* are only ever put, so they must all survive
    net = new TestNetwork({
      seed: 7,
      faults: { drop: 0.3, duplicate: 0.2, maxDelay: 30, fetchFail: 0.1 },
      init: { rebroadcastInterval: 200, repairInterval: 300, dagSyncerTimeout: 1000 }
    })
    const replicas = await net.addMany(5)
    const acked: Array<{ key: string, value?: string }> = []
    const ops = Array.from({ length: 500 }, (_, i) => i)
    await Promise.all(replicas.map(async (r, ri) => {
      for (const i of ops.filter(o => o % replicas.length === ri)) {
        const slot = Math.floor(net.random() * 40)
        const roll = net.random()
        const k = slot < 10 && roll < 0.6 ? `/p/${slot}` : `/l/${slot}`
        if (roll < 0.6) {
          await r.store.put(key(k), enc(`v${i}`))
          acked.push({ key: k, value: `v${i}` })
        } else if (roll < 0.8) {
          await r.store.delete(key(k))
          acked.push({ key: k })
        } else {
          const batch = r.store.batch()
          const k2 = `/l/${Math.floor(net.random() * 40)}`
          batch.put(key(k), enc(`b${i}`))
          batch.delete(key(k2))
          await batch.commit()
          acked.push({ key: k, value: `b${i}` }, { key: k2 })
        }
      }
    }))
    await net.converge({ timeout: 60_000 })
    // failed fetches leave pending branches until a repair finishes them
    for (const r of replicas) {
      await waitFor(async () => (await r.store.pendingBranches()).length === 0, 30_000, `replica ${r.index} to finish its walks`)
    }
    const state = await net.converge({ timeout: 10_000 })
    await convergeHeads(net, 10_000)
    const final = new Map(state.map(e => e.split('=') as [string, string]))
    const putOnly = new Set(acked.filter(a => a.key.startsWith('/p/')).map(a => a.key))
    expect(putOnly.size, 'put-only keys written').to.be.at.least(8)
    expect([...putOnly].filter(k => !final.has(k)), 'put-only keys lost').to.deep.equal([])
    expect(final.size).to.be.at.least(putOnly.size)
    // the faults happened: a fifth of broadcasts dropped or more, duplicates, delays, failed fetches
    const { dropped, delivered, duplicated, delayed, failedFetches } = net.counts
    expect(dropped / (dropped + delivered), 'share of broadcasts dropped').to.be.within(0.15, 0.45)
    expect(duplicated, 'duplicated broadcasts').to.be.greaterThan(10)
    expect(delayed, 'delayed deliveries').to.be.greaterThan(100)
    expect(failedFetches, 'failed fetches').to.be.greaterThan(0)
    for (const k of new Set(acked.map(a => a.key))) {
      const writes = acked.filter(a => a.key === k)
      const value = final.get(k)
      if (value == null) {
        expect(writes.some(w => w.value == null), `${k} vanished without a delete`).to.equal(true)
      } else {
        expect(writes.some(w => w.value === value), `${k}=${value} was never written`).to.equal(true)
      }
    }
  })

  it('a failed fetch leaves the branch pending, and repair finishes it (go-ds-crdt #279/#350)', async () => {
    // every write announced on its own: the last one does not carry the node that cannot be fetched
    net = new TestNetwork({ seed: 8, init: { repairInterval: 0, rebroadcastInterval: 3_600_000, announceInterval: 0 } })
    const [a, b] = await net.addMany(2)
    net.faults.drop = 1
    for (let i = 0; i < 20; i++) await a.store.put(key(`/r/${i}`), enc(`${i}`))
    net.faults.drop = 0
    // the 10th node of the chain cannot be fetched
    const chain = []
    let cursor = a.store.heads()[0].cid
    for (let i = 0; i < 10; i++) {
      chain.push(cursor)
      const { decodeNode } = await import('../src/index.js')
      const chunks: Uint8Array[] = []
      for await (const c of a.blockstore.local.get(cursor)) chunks.push(c)
      cursor = decodeNode(cursor, chunks[0]).links[0]
    }
    net.unfetchable.add(cursor.toString())
    await a.store.put(key('/r/last'), enc('last'))
    const deadline = Date.now() + 10_000
    while (!(await b.store.isDirty()) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
    expect(await b.store.isDirty()).to.equal(true)
    // the node above the gap waits for it (its link's claim bounds its priority): it is the branch pending
    expect((await b.store.pendingBranches()).map(String)).to.deep.equal([chain[9].toString()])
    expect((await stateOf(b.store)).length).to.equal(10) // the 9 nodes above the waiting one, and /r/last
    net.unfetchable.clear()
    await b.store.repair()
    expect(await b.store.isDirty()).to.equal(false)
    expect(await b.store.pendingBranches()).to.have.lengthOf(0)
    expect(await stateOf(b.store)).to.deep.equal(await stateOf(a.store))
  })

  it('a replica stopped mid-walk resumes from its LevelDB and converges', async () => {
    const dir = await tempDir('crdt-midwalk')
    try {
      net = new TestNetwork({ seed: 9, init: { rebroadcastInterval: 3_600_000, numWorkers: 1 } })
      const a = await net.add()
      const b = await net.add({ dir: dir.path })
      net.faults.drop = 1
      for (let i = 0; i < 200; i++) await a.store.put(key(`/w/${i}`), enc(`${i}`))
      net.faults.drop = 0
      let processed = 0
      b.store.addEventListener('processed', () => { processed++ })
      await a.store.put(key('/w/last'), enc('last'))
      const deadline = Date.now() + 10_000
      while (processed < 20 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 1))
      await net.crashReplica(1)
      const partial = processed
      expect(partial).to.be.greaterThan(0).and.lessThan(201)
      const reopened = await net.reopen(1, { repairInterval: 200 })
      expect(await reopened.store.pendingBranches()).to.have.length.greaterThan(0)
      const state = await net.converge({ check: s => s.length === 201 })
      expect(state).to.include('/w/0=0')
      expect(await reopened.store.pendingBranches()).to.have.lengthOf(0)
    } finally {
      await net.stop()
      await dir.remove()
    }
  })

  it('named DAGs stay separate, and purgeDAG leaves no trace of the purged DAG', async () => {
    net = new TestNetwork({ seed: 10 })
    const [a, b] = await net.addMany(2)
    await a.store.put(key('/shared'), enc('default'))
    await a.store.put(key('/only-team'), enc('t1'), { dagName: 'team' })
    await a.store.put(key('/shared'), enc('team-value'), { dagName: 'team' })
    await net.converge({ check: s => s.length === 2 })
    expect(b.store.heads('team')).to.have.lengthOf(1)
    expect(b.store.heads('')).to.have.lengthOf(1)
    expect(b.store.heads('team')[0].height).to.equal(2)
    expect(b.store.heads('')[0].height).to.equal(1)

    const teamBlocks = [b.store.heads('team')[0].cid]
    const removed = await b.store.purgeDAG('team')
    expect(removed).to.equal(2)
    expect(b.store.heads('team')).to.have.lengthOf(0)
    expect(await stateOf(b.store)).to.deep.equal(['/shared=default'])
    // no entry of the datastore mentions a purged block
    const { blockKey } = await import('../src/index.js')
    const ids = teamBlocks.map(blockKey)
    for await (const { key: k } of b.datastore.query({})) {
      for (const id of ids) expect(k.toString()).to.not.include(id)
    }
    expect(await b.blockstore.has(teamBlocks[0])).to.equal(false)
  })

  it('malformed broadcasts and blocks are logged and skipped; the replica keeps serving', async () => {
    net = new TestNetwork({ seed: 11, init: { repairInterval: 0 } })
    const [a, b] = await net.addMany(2)
    await a.store.receive(Uint8Array.of(1, 2, 3, 4, 5))
    await a.store.receive(new Uint8Array(0))
    // a block whose delta is garbage, and one of the wrong codec
    const junk = dagPbNode([0xff, 0xff, 0xff], [])
    const junkCid = CID.createV1(0x70, await sha256.digest(junk))
    await b.blockstore.local.put(junkCid, junk)
    await a.store.receive(encodeBroadcast([{ cid: junkCid, dagName: '' }]))
    const raw = CID.createV1(0x55, await sha256.digest(Uint8Array.of(1)))
    await a.store.receive(encodeBroadcast([{ cid: raw, dagName: '' }]))
    // a block that claims priority 2^64-1
    const absurd = dagPbNode(delta([element('/absurd', '', 'x')], [], 2n ** 64n - 1n), [])
    const absurdCid = CID.createV1(0x70, await sha256.digest(absurd))
    await b.blockstore.local.put(absurdCid, absurd)
    await a.store.receive(encodeBroadcast([{ cid: absurdCid, dagName: '' }]))
    // skipped for good: nothing pending, nothing dirty, nothing merged
    expect(await a.store.pendingBranches()).to.have.lengthOf(0)
    expect(await a.store.isDirty()).to.equal(false)
    expect(await a.store.has(key('/absurd'))).to.equal(false)
    expect(a.store.heads()).to.have.lengthOf(0)
    await b.store.put(key('/fine'), enc('still works'))
    await net.converge({ check: s => s.length === 1 })
    expect(dec(await a.store.get(key('/fine')))).to.equal('still works')
  })

  it('broadcastBatchDelay gathers local heads and drops superseded ones', async () => {
    net = new TestNetwork({ seed: 12, init: { broadcastBatchDelay: 100, rebroadcastInterval: 3_600_000 } })
    const [a, b] = await net.addMany(2)
    const payloads: Uint8Array[] = []
    const original = a.inbox.broadcast.bind(a.inbox)
    a.inbox.broadcast = async (data) => { payloads.push(data); await original(data) }
    for (let i = 0; i < 10; i++) await a.store.put(key(`/d/${i}`), enc(`${i}`))
    await net.converge({ check: s => s.length === 10 })
    expect(payloads).to.have.lengthOf(1)
    const { decodeBroadcast } = await import('../src/index.js')
    expect(decodeBroadcast(payloads[0]).get('')?.map(String)).to.deep.equal([a.store.heads()[0].cid.toString()])
    expect(await stateOf(b.store)).to.have.lengthOf(10)
  })

  it('multiHeadProcessing converges too', async () => {
    net = new TestNetwork({ seed: 13, init: { multiHeadProcessing: true }, faults: { maxDelay: 20 } })
    const replicas = await net.addMany(5)
    await Promise.all(replicas.map(async (r, ri) => {
      for (let i = 0; i < 20; i++) await r.store.put(key(`/m/${ri}/${i}`), enc('x'))
    }))
    expect(await net.converge({ check: s => s.length === 100 })).to.have.lengthOf(100)
  })
})

describe('DAG views', () => {
  it('printDAG and dotDAG show every node with its priority and links', async () => {
    const { memoryReplica } = await import('./fixtures/stores.js')
    const { store } = await memoryReplica()
    await store.put(key('/a'), enc('1'))
    await store.put(key('/b'), enc('2'), { dagName: 'side' })
    await store.put(key('/c'), enc('3'))
    const text = await store.printDAG()
    const lines = text.split('\n')
    expect(lines).to.have.lengthOf(3)
    expect(lines.filter(l => l.includes('{/c}'))[0]).to.match(/^- 2 \| \w{8}: \{\/c\} -> \w{8}$/)
    expect(text).to.include('[side]')
    const dot = await store.dotDAG()
    expect(dot.startsWith('digraph')).to.equal(true)
    expect(dot.match(/->/g)).to.have.lengthOf(1)
    await store.stop()
  })
})

describe('rebroadcast', () => {
  it('re-announces own heads every interval, except heads another replica announced meanwhile', async function () {
    this.timeout(20_000)
    const { memoryReplica } = await import('./fixtures/stores.js')
    const { decodeBroadcast } = await import('../src/index.js')
    const sent: Array<{ at: number, cids: string[] }> = []
    const broadcaster = {
      async broadcast (data: Uint8Array) { sent.push({ at: Date.now(), cids: [...decodeBroadcast(data).values()].flat().map(String) }) },
      async next (options?: { signal?: AbortSignal }) {
        return new Promise<Uint8Array>((_resolve, reject) => {
          options?.signal?.addEventListener('abort', () => { reject(new Error('aborted')) }, { once: true })
        })
      }
    }
    const { store } = await memoryReplica({ rebroadcastInterval: 200 }, { broadcaster })
    try {
      await store.put(key('/r'), enc('1'))
      const head = store.heads()[0].cid.toString()
      expect(sent).to.have.lengthOf(1) // the announcement of the write
      await waitFor(() => sent.length >= 3, 5000, 'two rebroadcasts')
      expect(sent.every(s => s.cids.length === 1 && s.cids[0] === head)).to.equal(true)
      // another replica announces the same head every 50 ms: ours is skipped
      const count = sent.length
      const payload = encodeBroadcast([{ cid: store.heads()[0].cid, dagName: '' }])
      const until = Date.now() + 1000
      while (Date.now() < until) {
        await store.receive(payload)
        await new Promise(resolve => setTimeout(resolve, 50))
      }
      expect(sent.length).to.equal(count)
      // once nobody else announces it, it is rebroadcast again
      await waitFor(() => sent.length > count, 5000, 'rebroadcast to resume')
    } finally {
      await store.stop()
    }
  })
})
