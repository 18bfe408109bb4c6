/**
 * Compaction (#16): `compact()` deletes the blocks of the nodes below the
 * snapshot's covered heads and the element markers of tombstoned elements,
 * keeps tombstones and processed markers (a covered node that comes again
 * changes nothing, a deleted key stays deleted), waits while a known
 * replica announces no snapshot support or has not passed the snapshot,
 * and is atomic across a kill.
 */

import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { encodeBroadcast } from '../src/index.js'
import { addSnapshotAnnouncement, readSnapshotAnnouncement } from '../src/codec/broadcast-snapshot.js'
import { AnnouncerBroadcaster } from './fixtures/announcer-broadcaster.js'
import { stateOf, waitFor } from './fixtures/network.js'
import { dec, enc, levelReplica, memoryReplica, readBlock, tempDir } from './fixtures/stores.js'
import type { CRDTDatastore } from '../src/index.js'
import type { Datastore } from 'interface-datastore'

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
      // 30 elements written, 5 live (one deleted): 26 tombstoned markers go
      expect(result.removed.entries).to.equal(elements - 4)
      expect(await count(r.datastore, '/crdt/s/s')).to.equal(4)
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

  for (const [point, after] of [['walk', 3], ['delete', 4]] as const) {
    it(`a kill during compaction (${point === 'walk' ? 'before its batch' : 'while deleting blocks'}) leaves no half-compacted state after reopening`, async () => {
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
          if (point === 'walk') {
            // killed before the batch: nothing compacted
            expect(history.compacted).to.equal(undefined)
            expect(history.nodes).to.equal(nodes)
            expect(await count(r.datastore, '/crdt/s/s')).to.equal(elements)
          } else {
            // killed after it: start() finished the deletion
            expect(history.compacted).to.not.equal(undefined)
            expect(history.nodes).to.equal(1)
            expect(await count(r.datastore, '/crdt/s/s')).to.equal(3)
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

