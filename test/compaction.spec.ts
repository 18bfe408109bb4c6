/**
 * Compaction (#16): `compact()` deletes the blocks of the nodes below the
 * snapshot's covered heads, the element markers of tombstoned elements and
 * the overwritten elements the snapshot removed,
 * keeps tombstones and processed markers (a covered node that comes again
 * changes nothing, a deleted key stays deleted), waits while a known
 * replica announces no snapshot support or has not passed the snapshot,
 * and is atomic across a kill.
 */

import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import toBuffer from 'it-to-buffer'
import { addSnapshotAnnouncement, readSnapshotAnnouncement } from '../src/codec/broadcast-snapshot.js'
import { createHeliaCRDT } from '../src/helia/index.js'
import { createCRDTDatastore, encodeBroadcast } from '../src/index.js'
import { createReplicaNode } from '../src/node/index.js'
import { decodeRoot } from '../src/snapshot/format.js'
import { readSnapshot } from '../src/snapshot/install.js'
import { AnnouncerBroadcaster } from './fixtures/announcer-broadcaster.js'
import { convergeHeads, stateOf, TestNetwork, waitFor } from './fixtures/network.js'
import { dec, enc, levelReplica, memoryReplica, readBlock, tempDir } from './fixtures/stores.js'
import type { CRDTDatastore, CompactResult } from '../src/index.js'
import type { Datastore } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

const crasher = fileURLToPath(new URL('./fixtures/compact-crasher.js', import.meta.url))

/** Rewrites `keys` keys `rounds` times (one batch per round) and deletes the first key */
async function churn (store: CRDTDatastore, keys: number, rounds: number): Promise<void> {
  for (let r = 0; r < rounds; r++) {
    const batch = store.batch()
    for (let k = 0; k < keys; k++) batch.put(new Key(`/c/${k}`), enc(`v${r}-${k}`))
    await batch.commit()
  }
  await store.delete(new Key('/c/0'))
}

async function count (datastore: Datastore, prefix: string): Promise<number> {
  let n = 0
  for await (const _ of datastore.queryKeys({ prefix })) n++ // eslint-disable-line @typescript-eslint/no-unused-vars
  return n
}

describe('compaction', function () {
  this.timeout(60_000)

  it('removes the blocks below the covered heads and the tombstoned element markers; state, tombstones and processed markers stay, and an old node coming again changes nothing', async () => {
    const r = await memoryReplica()
    try {
      await churn(r.store, 5, 4)
      const first = r.store.heads()[0].cid
      const firstBytes = await readBlock(r.blockstore, first)
      await churn(r.store, 5, 2)
      const before = await stateOf(r.store)
      const history = await r.store.historyStats()
      expect(history.nodes).to.equal(8)
      const tombstones = await count(r.datastore, '/crdt/s/t')
      const elements = await count(r.datastore, '/crdt/s/s')

      const result = await r.store.compact()
      expect(result.waiting).to.equal(undefined)
      // 8 nodes, the head (the covered head) stays
      expect(result.removed.blocks).to.equal(7)
      // 30 elements written, the 6 of the deleted key are tombstoned: their markers go; of the
      // other 4 keys' 24, the 20 overwritten ones were removed by the snapshot and are forgotten
      expect(result.removed.entries).to.equal(26)
      expect(await count(r.datastore, '/crdt/s/s')).to.equal(elements - 26)
      expect(await count(r.datastore, '/crdt/s/r')).to.equal(0)
      expect(await count(r.datastore, '/crdt/s/t')).to.equal(tombstones)
      expect(await stateOf(r.store)).to.deep.equal(before)
      expect(await r.blockstore.has(first)).to.equal(false)
      expect(await r.store.hasMerged(first)).to.equal(true)
      expect(r.store.stats().history.nodes).to.equal(1)
      expect(r.store.stats().history.compacted?.equals(result.snapshot)).to.equal(true)

      // an old node delivered again (a stale replica) is skipped: /c/0 stays deleted, heads unchanged
      const heads = r.store.heads().map(h => h.cid.toString())
      await r.blockstore.put(first, firstBytes)
      await r.store.receive(encodeBroadcast([{ cid: first, dagName: '' }]))
      expect(await stateOf(r.store)).to.deep.equal(before)
      expect(r.store.heads().map(h => h.cid.toString())).to.deep.equal(heads)
      await r.blockstore.delete(first)

      // writes go on; a second compaction removes the first snapshot's blocks and the old covered head
      await r.store.put(new Key('/c/1'), enc('after'))
      const second = await r.store.compact()
      expect(second.snapshot.equals(result.snapshot)).to.equal(false)
      expect(await r.blockstore.has(result.snapshot)).to.equal(false)
      expect(await r.blockstore.has(second.snapshot)).to.equal(true)
      expect(second.removed.blocks).to.be.greaterThan(1)
      expect(dec(await r.store.get(new Key('/c/1')))).to.equal('after')
      expect(await r.store.has(new Key('/c/0'))).to.equal(false)
    } finally {
      await r.store.stop()
    }
  })

  it('waits, and says why, while a known replica announces no snapshot support (go-ds-crdt); compacts once it announces the snapshot', async () => {
    const broadcaster = new AnnouncerBroadcaster()
    const r = await memoryReplica({ compaction: { interval: 0 }, rebroadcastInterval: 20 }, { broadcaster })
    try {
      await churn(r.store, 3, 3)
      const payload = encodeBroadcast(r.store.heads().map(h => ({ cid: h.cid, dagName: h.dagName })))
      broadcaster.deliver(payload, 'go-peer')
      await waitFor(() => r.store.stats().receivedBroadcasts === 1, 10_000, 'the go payload')
      let result = await r.store.compact()
      // the settle period (two rebroadcast intervals) passes first
      for (let i = 0; i < 100 && (result.waiting ?? '').startsWith('learning'); i++) {
        await new Promise(resolve => setTimeout(resolve, 20))
        result = await r.store.compact()
      }
      expect(result.waiting).to.include('go-peer').and.to.include('no snapshot support')
      expect(result.removed).to.deep.equal({ blocks: 0, entries: 0 })
      expect(r.store.stats().history.waiting).to.equal(result.waiting)
      expect((await r.store.historyStats()).nodes).to.equal(4)

      // what this replica sends announces the snapshot it passed
      await r.store.put(new Key('/x'), enc('1'))
      await waitFor(() => broadcaster.sent.some(p => readSnapshotAnnouncement(p).snapshot != null), 10_000, 'an announcement')
      const announced = broadcaster.sent.map(p => readSnapshotAnnouncement(p)).filter(a => a.snapshot != null).at(-1)
      expect(announced?.supported).to.equal(true)
      expect(announced?.snapshot?.equals(result.snapshot)).to.equal(true)

      // the peer reads snapshots but has passed none yet
      broadcaster.deliver(addSnapshotAnnouncement(payload), 'go-peer')
      await waitFor(() => r.store.stats().receivedBroadcasts === 2, 10_000, 'the supporting payload')
      result = await r.store.compact()
      expect(result.waiting).to.include('go-peer').and.to.include('has not passed')
      // it announces the newest snapshot
      broadcaster.deliver(addSnapshotAnnouncement(payload, result.snapshot), 'go-peer')
      await waitFor(() => r.store.stats().receivedBroadcasts === 3, 10_000, 'the announcing payload')
      const done = await r.store.compact()
      expect(done.waiting).to.equal(undefined)
      expect(done.snapshot.equals(result.snapshot)).to.equal(true)
      expect(done.removed.blocks).to.equal(4)
      expect(r.store.stats().history.waiting).to.equal(undefined)
    } finally {
      await r.store.stop()
      broadcaster.close()
    }
  })

  it('over a network: waits for a replica that has not passed the snapshot, compacts once every replica has; a fresh replica joins from the snapshot and a replica partitioned during the compaction catches up from it keeping its own write (no delete resurrected)', async () => {
    const net = new TestNetwork({ announcers: true, init: { compaction: { interval: 0, membershipWindow: 1500 }, rebroadcastInterval: 100, repairInterval: 200 } })
    /** compact() until it removes something or says why not `rounds` times */
    const compactWhen = async (store: CRDTDatastore, done: (r: CompactResult) => boolean, what: string): Promise<CompactResult> => {
      let result: CompactResult | undefined
      for (let i = 0; i < 300; i++) {
        result = await store.compact()
        if (done(result)) return result
        await new Promise(resolve => setTimeout(resolve, 50))
      }
      throw new Error(`${what}: last result ${JSON.stringify(result?.waiting)}`)
    }
    try {
      const [a, b, d] = await net.addMany(3)
      await churn(a.store, 4, 6)
      // a replica is known once heard: d writes (a silent replica is not known, and needs not be:
      // with nothing of its own to lose, it catches up from the snapshot like d below)
      await d.store.put(new Key('/d-first'), enc('1'))
      await net.converge()
      await convergeHeads(net)

      // d goes away with a write of its own, and a delete of a key the others keep rewriting
      net.partition([0, 1], [2])
      await d.store.put(new Key('/d-own'), enc('kept'))
      await churn(a.store, 4, 2)
      await waitFor(async () => JSON.stringify(await stateOf(b.store)) === JSON.stringify(await stateOf(a.store)), 10_000, 'b to follow a')
      // while d is a known replica it has not passed the snapshot: a waits and says so
      const first = await compactWhen(a.store, r => (r.waiting ?? '').includes('replica-2'), 'waiting for d')
      expect(first.waiting).to.include('has not passed')
      expect(first.removed).to.deep.equal({ blocks: 0, entries: 0 })
      // d drops out of the membership window; b passes a's snapshot and says so: a compacts
      const done = await compactWhen(a.store, r => r.removed.blocks > 0, 'a compacting')
      const bDone = await compactWhen(b.store, r => r.waiting == null, 'b compacting')
      expect(bDone.snapshot.equals(done.snapshot)).to.equal(true)
      expect(bDone.removed.blocks).to.be.greaterThan(0)
      const oldBlocks = (await a.store.historyStats()).nodes

      // a fresh replica joins from the snapshot: it fetches no block below the covered heads
      await a.store.put(new Key('/after'), enc('1'))
      const c = await net.add()
      net.partition([0, 1, 3], [2])
      await a.store.put(new Key('/after'), enc('2'))
      await waitFor(async () => (await stateOf(c.store)).includes('/after=2'), 20_000, 'c to join')
      expect(c.store.stats().fetchedBlocks).to.be.lessThan(10)
      expect(await c.store.isDirty()).to.equal(false)
      expect(await stateOf(c.store)).to.deep.equal(await stateOf(a.store))

      // d comes back: its walk into compacted history fails, it installs the snapshot, keeps its write
      net.heal()
      await a.store.put(new Key('/after'), enc('3'))
      const state = await net.converge({ timeout: 30_000, check: s => s.includes('/d-own=kept') && s.includes('/after=3') })
      expect(state).to.not.include.members(['/c/0=v7-0'])
      expect(state.some(e => e.startsWith('/c/0='))).to.equal(false)
      expect(oldBlocks).to.be.greaterThan(0)
      // d's walk into the compacted history is over: the install found its frontier below the covered heads
      await waitFor(async () => (await d.store.pendingBranches()).length === 0 && !(await d.store.isDirty()), 10_000, 'd clean')
    } finally {
      await net.stop()
    }
  })

  it('remembers known replicas across a restart (bounded by maxKnownReplicas and the membership window): compaction after a restart still waits for one not heard since (regression: it was forgotten)', async () => {
    const datastore = new MemoryDatastore()
    const blockstore = new MemoryBlockstore()
    const open = async (broadcaster: AnnouncerBroadcaster, membershipWindow = 60_000): Promise<CRDTDatastore> =>
      createCRDTDatastore({ datastore, blockstore, broadcaster }, { compaction: { interval: 0, maxKnownReplicas: 2, membershipWindow }, rebroadcastInterval: 20 })
    /** compact() once the settle period is over */
    const compactSettled = async (store: CRDTDatastore): Promise<CompactResult> => {
      let result = await store.compact()
      for (let i = 0; i < 100 && (result.waiting ?? '').startsWith('learning'); i++) {
        await new Promise(resolve => setTimeout(resolve, 20))
        result = await store.compact()
      }
      return result
    }
    const first = new AnnouncerBroadcaster()
    let store = await open(first)
    try {
      await churn(store, 3, 3)
      const payload = addSnapshotAnnouncement(encodeBroadcast(store.heads().map(h => ({ cid: h.cid, dagName: h.dagName }))), undefined)
      for (const [i, peer] of ['peer-1', 'peer-2', 'peer-3'].entries()) {
        first.deliver(payload, peer)
        await waitFor(() => store.stats().receivedBroadcasts === i + 1, 10_000, peer)
        await new Promise(resolve => setTimeout(resolve, 5))
      }
    } finally {
      await store.stop()
    }
    expect(await count(datastore, '/crdt/z/m')).to.equal(2)

    // nobody announces after the restart: the two most recently heard are still known
    store = await open(new AnnouncerBroadcaster())
    try {
      const result = await compactSettled(store)
      expect(result.waiting).to.match(/replica peer-[23] has not passed snapshot/)
      expect(result.removed).to.deep.equal({ blocks: 0, entries: 0 })
      expect(result.waiting).to.not.include('peer-1')
    } finally {
      await store.stop()
    }

    // past the membership window they are forgotten (and their records deleted), and compaction goes ahead
    await new Promise(resolve => setTimeout(resolve, 20))
    store = await open(new AnnouncerBroadcaster(), 10)
    try {
      expect(await count(datastore, '/crdt/z/m')).to.equal(0)
      const result = await compactSettled(store)
      expect(result.waiting).to.equal(undefined)
      expect(result.removed.blocks).to.be.greaterThan(0)
    } finally {
      await store.stop()
    }
  })

  for (const syncProtocol of [true, false]) {
    it(`deletes the covered blocks from a Helia node's blockstore through ${syncProtocol ? 'the syncing blockstore' : 'the bitswap DAG syncer'} (regression: it had no delete, so compaction kept every block)`, async () => {
      const node = await createReplicaNode({ listen: [`/memory/compact-${Math.random().toString(36).slice(2)}`] })
      const store = await createHeliaCRDT(node, { topic: 'compact-helia', dagSyncerTimeout: 5000, syncProtocol, rebroadcastInterval: 20 })
      try {
        await store.put(new Key('/k'), enc('1'))
        const first = store.heads()[0].cid
        await store.put(new Key('/k'), enc('2'))
        await store.put(new Key('/j'), enc('3'))
        let result = await store.compact()
        // the settle period (two rebroadcast intervals) passes first
        for (let i = 0; i < 100 && (result.waiting ?? '').startsWith('learning'); i++) {
          await new Promise(resolve => setTimeout(resolve, 20))
          result = await store.compact()
        }
        expect(result.waiting).to.equal(undefined)
        expect(result.removed.blocks).to.equal(2)
        expect(await node.blockstore.has(first)).to.equal(false)
        expect(await node.blockstore.has(store.heads()[0].cid)).to.equal(true)
        expect((await store.historyStats()).nodes).to.equal(1)
        expect(await stateOf(store)).to.deep.equal(['/j=3', '/k=2'])
      } finally {
        await store.stop()
        await node.stop()
      }
    })
  }

  // `walk`: killed at compact()'s first block read (the new snapshot's root, before the batch; a store
  // with no walk unfinished lists the covered blocks by a scan of its processed markers, without reads)
  // `batch`: the blockstore is a LevelBlockstore, whose blocks compaction deletes by LevelDB batches
  // (block-deleter.ts): killed once the first batch of deletes landed, before the job record is gone
  const what = { walk: 'before its batch', delete: 'while deleting blocks', batch: 'after a LevelDB batch of block deletes' }
  for (const [point, after] of [['walk', 0], ['delete', 4], ['batch', 1]] as const) {
    it(`a kill during compaction (${what[point]}) leaves no half-compacted state after reopening`, async () => {
      const dir = await tempDir('compact-kill')
      try {
        let r = await levelReplica(dir.path)
        await churn(r.store, 4, 10)
        const state = await stateOf(r.store)
        const nodes = (await r.store.historyStats()).nodes
        const elements = await count(r.datastore, '/crdt/s/s')
        await r.close()

        const child = spawn(process.execPath, [crasher, dir.path, point, String(after)], { stdio: ['ignore', 'pipe', 'inherit'] })
        let out = ''
        child.stdout.on('data', (d: Buffer) => { out += d.toString() })
        const signal = await new Promise(resolve => child.on('exit', (_code, sig) => { resolve(sig) }))
        expect(signal).to.equal('SIGKILL')
        expect(out).to.not.include('compacted')

        r = await levelReplica(dir.path, { repairInterval: 0 })
        try {
          expect(await stateOf(r.store)).to.deep.equal(state)
          expect(await count(r.datastore, '/crdt/z/j')).to.equal(0)
          const history = await r.store.historyStats()
          // the snapshot made before removed the 27 overwritten elements of the 3 live keys (kept under s/r)
          const overwritten = 3 * 9
          if (point === 'walk') {
            // killed before the batch: nothing compacted
            expect(history.compacted).to.equal(undefined)
            expect(history.nodes).to.equal(nodes)
            expect(await count(r.datastore, '/crdt/s/s')).to.equal(elements - overwritten)
            expect(await count(r.datastore, '/crdt/s/r')).to.equal(overwritten)
          } else {
            // killed after it: start() finished the deletion
            expect(history.compacted).to.not.equal(undefined)
            expect(history.nodes).to.equal(1)
            expect(await count(r.datastore, '/crdt/s/s')).to.equal(elements - 10 - overwritten)
            expect(await count(r.datastore, '/crdt/s/r')).to.equal(0)
          }
          // and it compacts (again) to the same end
          const result = await r.store.compact()
          expect(result.waiting).to.equal(undefined)
          expect((await r.store.historyStats()).nodes).to.equal(1)
          expect(await stateOf(r.store)).to.deep.equal(state)
        } finally {
          await r.close()
        }
      } finally {
        await dir.remove()
      }
    })
  }
})

describe('compaction: what replicas announce, and what a second compaction deletes', function () {
  this.timeout(30_000)

  it('a second compaction keeps the chunks its snapshot shares with the previous one, so the new snapshot installs (regression: every chunk of the previous snapshot was deleted, shared ones included)', async () => {
    const r = await memoryReplica()
    try {
      // two element chunks of ~256 KiB: a change to the last key leaves the first chunk as it was
      const big = new Uint8Array(1024).fill(7)
      const batch = r.store.batch()
      for (let k = 0; k < 400; k++) batch.put(new Key(`/k${String(k).padStart(3, '0')}`), big)
      await batch.commit()
      await r.store.put(new Key('/k399'), enc('first'))
      const first = await r.store.compact()
      const firstChunks = (await readSnapshot(r.blockstore, first.snapshot)).root.elementChunks.map(c => c.toString())
      await r.store.put(new Key('/k399'), enc('second'))
      const second = await r.store.compact()
      expect(second.removed.blocks).to.be.greaterThan(0)
      const secondRoot = decodeRoot(second.snapshot, await readBlock(r.blockstore, second.snapshot))
      const shared = secondRoot.elementChunks.filter(c => firstChunks.includes(c.toString()))
      expect(shared.length, 'chunks shared by the two snapshots').to.be.greaterThan(0)
      for (const chunk of secondRoot.elementChunks) expect(await r.blockstore.has(chunk), `chunk ${chunk}`).to.equal(true)
      expect(await r.blockstore.has(first.snapshot)).to.equal(false)
      const joiner = await memoryReplica({}, { blockstore: r.blockstore })
      try {
        await joiner.store.installSnapshot(second.snapshot)
        expect(dec(await joiner.store.get(new Key('/k399')))).to.equal('second')
      } finally {
        await joiner.store.stop()
      }
    } finally {
      await r.store.stop()
    }
  })

  it('a head announced late that lies below the snapshot passed here, though no walk reaches it, adds no head (regression: a replica back from away announced its old head, whose element a later delete had tombstoned, and it became an extra head)', async () => {
    const a = await memoryReplica()
    const c = await memoryReplica()
    try {
      await a.store.put(new Key('/k'), enc('1'))
      const old = a.store.heads()[0].cid
      const oldBytes = await readBlock(a.blockstore, old)
      await a.store.put(new Key('/x'), enc('1'))
      await a.store.delete(new Key('/k'))
      await a.store.put(new Key('/y'), enc('1'))
      const { snapshot, removed } = await a.store.compact()
      expect(removed.blocks).to.equal(3)
      // c joins from the snapshot (the blocks a kept, copied over) and compacts: it passes its own snapshot
      for await (const { cid, bytes } of a.blockstore.getAll()) await c.blockstore.put(cid, await toBuffer(bytes))
      await c.store.installSnapshot(snapshot)
      await c.store.compact()
      // a replica that went away after the first write comes back announcing it: the nodes between are gone
      await c.blockstore.put(old, oldBytes)
      await c.store.receive(encodeBroadcast([{ cid: old, dagName: '' }]))
      await waitFor(async () => c.store.hasMerged(old), 10_000, 'the old head to be settled')
      expect(c.store.heads().map(h => h.cid.toString())).to.deep.equal(a.store.heads().map(h => h.cid.toString()))
      expect(await stateOf(c.store)).to.deep.equal(await stateOf(a.store))
    } finally {
      await a.store.stop()
      await c.store.stop()
    }
  })

  it('a replica passes (announces) another replica\'s snapshot only once every block of it is here, so it can serve it (regression: only the root was fetched, and a joiner could not install what it announced once the maker was out of reach)', async () => {
    const net = new TestNetwork({ announcers: true, init: { compaction: { interval: 0, membershipWindow: 60_000 }, rebroadcastInterval: 30, repairInterval: 100 } })
    try {
      const [a, b] = await net.addMany(2)
      const batch = a.store.batch()
      for (let k = 0; k < 300; k++) batch.put(new Key(`/k${k}`), new Uint8Array(1024).fill(k % 251))
      await batch.commit()
      await net.converge()
      const snapshot = await a.store.snapshot()
      const root = decodeRoot(snapshot, await readBlock(a.blockstore.local, snapshot))
      expect(root.elementChunks.length).to.be.greaterThan(1)
      // a announces it (compact() passes it); b passes it once it has merged its covered heads
      await a.store.compact()
      await waitFor(() => b.store.stats().history.snapshot?.equals(snapshot) === true, 10_000, 'b to pass the snapshot')
      for (const chunk of [...root.elementChunks, ...root.tombstoneChunks]) {
        expect(await b.blockstore.local.has(chunk), `chunk ${chunk} on the replica that announces it`).to.equal(true)
      }
    } finally {
      await net.stop()
    }
  })
})

/**
 * A blockstore that fetches what it lacks from another replica's
 * blockstore, as bitswap would: a block the other lacks is answered
 * NotFoundError (`missing: 'refuse'`, a peer saying it lacks it) or waited
 * for until the fetch is aborted (`missing: 'wait'`, a want nobody answers).
 * `get` with `offline` reads local blocks only.
 */
class PeerBlockstore extends MemoryBlockstore {
  constructor (private readonly peer: MemoryBlockstore, private readonly missing: 'refuse' | 'wait' = 'refuse') {
    super()
  }

  override async * get (cid: CID, options?: AbortOptions & { offline?: boolean }): AsyncGenerator<Uint8Array> {
    if (await super.has(cid) || options?.offline === true) {
      yield * super.get(cid, options)
      return
    }
    if (await this.peer.has(cid)) {
      const bytes = await toBuffer(this.peer.get(cid))
      await this.put(cid, bytes)
      yield bytes
      return
    }
    if (this.missing === 'wait') {
      await new Promise((resolve, reject) => {
        if (options?.signal == null) return
        options.signal.addEventListener('abort', () => { reject(options.signal?.reason) }, { once: true })
      })
    }
    throw Object.assign(new Error(`no peer has ${cid}`), { name: 'NotFoundError' })
  }
}

describe('compaction: a path back for every replica (chaos regressions)', function () {
  this.timeout(30_000)

  it('payloads whose sender is not named keep compaction waiting, and it says why (regression: they were not counted, so every replica compacted as if alone while the others still needed the blocks)', async () => {
    const broadcaster = new AnnouncerBroadcaster()
    const r = await memoryReplica({ compaction: { interval: 0 }, rebroadcastInterval: 20 }, { broadcaster })
    try {
      await churn(r.store, 3, 3)
      const snapshot = await r.store.snapshot()
      // another replica, announcing this very snapshot, whose transport does not say who sent it
      broadcaster.deliver(addSnapshotAnnouncement(encodeBroadcast(r.store.heads().map(h => ({ cid: h.cid, dagName: h.dagName }))), snapshot), '')
      await waitFor(() => r.store.stats().receivedBroadcasts === 1, 10_000, 'the payload')
      let result = await r.store.compact()
      for (let i = 0; i < 100 && (result.waiting ?? '').startsWith('learning'); i++) {
        await new Promise(resolve => setTimeout(resolve, 20))
        result = await r.store.compact()
      }
      expect(result.waiting).to.include('do not say who sent them')
      expect(result.removed).to.deep.equal({ blocks: 0, entries: 0 })
      expect((await r.store.historyStats()).nodes).to.equal(4)
    } finally {
      await r.store.stop()
      broadcaster.close()
    }
  })

  it('a replica that gave up a branch compacted away on every peer makes no snapshot meanwhile, and installs the snapshot a peer announces that covers it: the writes below come back (regression: clean, with heads, it ignored announced snapshots and lost them for good, and snapshotted and compacted over the gap)', async () => {
    // a: compacts alone (no broadcaster, no known replica), so the block of its first node is gone
    const a = await memoryReplica({ compaction: { interval: 0 } })
    const broadcaster = new AnnouncerBroadcaster()
    const b = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore: new PeerBlockstore(a.blockstore), broadcaster }, {
      maxFetchAttempts: 1, dagSyncerTimeout: 2000, headTimeout: 2000, repairInterval: 0, rebroadcastInterval: 50
    })
    try {
      await a.store.put(new Key('/k/a'), enc('a1'))
      const first = a.store.heads()[0].cid
      await a.store.put(new Key('/k/b'), enc('b1'))
      const { snapshot, removed } = await a.store.compact()
      expect(removed.blocks).to.equal(1)
      expect(await a.blockstore.has(first)).to.equal(false)
      await a.store.put(new Key('/k/c'), enc('c1'))
      const payload = encodeBroadcast(a.store.heads().map(h => ({ cid: h.cid, dagName: h.dagName })))

      // b has history of its own; a's head reaches it without an announcement: the walk down fails
      await b.put(new Key('/k/own'), enc('mine'))
      broadcaster.deliver(payload, 'replica-a')
      await waitFor(async () => (await b.givenUpBranches()).length > 0, 10_000, 'b to give the branch up')
      await b.repair()
      expect(await b.isDirty()).to.equal(false)
      expect(await stateOf(b)).to.not.include('/k/a=a1')
      // the set lacks the branch: a snapshot of it would not be the state at its heads
      await expect(b.snapshot()).to.eventually.be.rejected.with.property('name', 'SnapshotNotReadyError')

      // a announces its snapshot: b installs it, the branch is settled and the writes are there
      broadcaster.deliver(addSnapshotAnnouncement(payload, snapshot), 'replica-a')
      await waitFor(async () => (await stateOf(b)).includes('/k/a=a1'), 10_000, 'b to install the announced snapshot')
      expect(await stateOf(b)).to.deep.equal(['/k/a=a1', '/k/b=b1', '/k/c=c1', '/k/own=mine'])
      expect(await b.givenUpBranches()).to.deep.equal([])
      expect((await b.snapshot()).toString()).to.be.a('string')
    } finally {
      await b.stop()
      broadcaster.close()
      await a.store.stop()
    }
  })

  it('an announced snapshot that can no longer be fetched holds up the payload\'s heads only for the head deadline (regression: a fresh replica waited for its root for the 5 minutes of a snapshot block, and no payload was read meanwhile)', async () => {
    const a = await memoryReplica()
    const broadcaster = new AnnouncerBroadcaster()
    const c = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore: new PeerBlockstore(a.blockstore, 'wait'), broadcaster }, {
      headTimeout: 300, rebroadcastInterval: 50
    })
    try {
      await a.store.put(new Key('/k/x'), enc('x1'))
      // a snapshot made and gone since (its maker compacted a newer one): nobody has its root any more
      const gone = await a.store.snapshot()
      await a.blockstore.delete(gone)
      const payload = addSnapshotAnnouncement(encodeBroadcast(a.store.heads().map(h => ({ cid: h.cid, dagName: h.dagName }))), gone)
      broadcaster.deliver(payload, 'replica-a')
      await waitFor(async () => (await stateOf(c)).includes('/k/x=x1'), 10_000, 'the head to be merged')
      // the same announcement again is not waited for a second time
      broadcaster.deliver(payload, 'replica-a')
      await a.store.put(new Key('/k/y'), enc('y1'))
      broadcaster.deliver(encodeBroadcast(a.store.heads().map(h => ({ cid: h.cid, dagName: h.dagName }))), 'replica-a')
      await waitFor(async () => (await stateOf(c)).includes('/k/y=y1'), 10_000, 'the next head to be merged')
    } finally {
      await c.stop()
      broadcaster.close()
      await a.store.stop()
    }
  })
})
