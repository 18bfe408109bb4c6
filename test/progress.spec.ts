/**
 * Progress (#14.6, #15.5): `onProgress` on writes, `synced()` and
 * `repair()`, forwarded into the DAG syncer's `get`/`put` so its own events
 * come through; the store's `sync:progress` event (nodes and bytes merged,
 * known frontier left); and the CLI's live counter driven by that event.
 */

import { expect } from 'aegir/chai'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import { SyncProgress } from '../src/cli/progress.js'
import { createCRDTDatastore, decodeNode, encodeBroadcast } from '../src/index.js'
import { blockSizes, HandFedBroadcaster, RemoteBlockstore } from './fixtures/progress.js'
import { dec, enc, memoryReplica, readBlock } from './fixtures/stores.js'
import type { CRDTDatastore, SyncProgressDetail } from '../src/index.js'
import type { MemoryReplica } from './fixtures/stores.js'
import type { ProgressEvent } from 'progress-events'

/** Events of every kind: the tests read their detail by type */
type AnyProgressEvent = ProgressEvent<string, any>

const CHAIN = 30

/** A writer holding a chain of CHAIN nodes, one key each */
async function writer (): Promise<MemoryReplica> {
  const a = await memoryReplica({ repairInterval: 0 })
  for (let i = 0; i < CHAIN; i++) await a.store.put(new Key(`/k${i}`), enc(`v${i}`))
  return a
}

async function reader (a: MemoryReplica): Promise<{ store: CRDTDatastore, blockstore: RemoteBlockstore, broadcaster: HandFedBroadcaster }> {
  const blockstore = new RemoteBlockstore(a.blockstore)
  const broadcaster = new HandFedBroadcaster()
  const store = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore, broadcaster }, { repairInterval: 0, rebroadcastInterval: 60_000 })
  return { store, blockstore, broadcaster }
}

function headsOf (a: MemoryReplica): Uint8Array {
  return encodeBroadcast(a.store.heads().map(h => ({ cid: h.cid, dagName: h.dagName })))
}

function byType (events: AnyProgressEvent[]): Record<string, AnyProgressEvent[]> {
  const out: Record<string, AnyProgressEvent[]> = {}
  for (const evt of events) (out[evt.type] ??= []).push(evt)
  return out
}

describe('progress events', function () {
  this.timeout(30_000)

  it('writes report the node written and its announcement, and the blockstore\'s own put events', async () => {
    const a = await memoryReplica()
    const broadcaster = new HandFedBroadcaster()
    const blockstore = new RemoteBlockstore(a.blockstore)
    // every write announced on its own (not gathered by the announce interval)
    const store = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore, broadcaster }, { repairInterval: 0, announceInterval: 0 })
    try {
      const events: AnyProgressEvent[] = []
      await store.put(new Key('/a'), enc('1'), { onProgress: evt => events.push(evt) })
      expect(events.map(e => e.type)).to.deep.equal(['blocks:put:blockstore:put', 'crdt:write:node', 'crdt:write:announce'])
      expect(String(events[1].detail.cid)).to.equal(store.heads()[0].cid.toString())
      expect(events[1].detail).to.include({ height: 1, dagName: '' })

      const batchEvents: AnyProgressEvent[] = []
      const batch = store.batch()
      batch.put(new Key('/b'), enc('2'))
      batch.delete(new Key('/a'))
      await batch.commit({ onProgress: evt => batchEvents.push(evt) })
      const written = byType(batchEvents)['crdt:write:node']
      expect(written).to.have.lengthOf(1)
      expect(String(written[0].detail.cid)).to.equal(store.heads()[0].cid.toString())
      expect(written[0].detail.height).to.equal(2)

      const deleteEvents: AnyProgressEvent[] = []
      await store.delete(new Key('/b'), { onProgress: evt => deleteEvents.push(evt) })
      expect(byType(deleteEvents)['crdt:write:announce']?.[0].detail.height).to.equal(3)
      expect(broadcaster.sent).to.have.lengthOf(3)
    } finally {
      await store.stop()
      await a.store.stop()
    }
  })

  it('a sync reports each node merged and where it stands, through synced({ onProgress }) and the store\'s sync:progress event, with the DAG syncer\'s events', async () => {
    const a = await writer()
    const b = await reader(a)
    try {
      const sizes = await blockSizes(a.blockstore)
      expect(sizes.size).to.equal(CHAIN)
      const storeEvents: SyncProgressDetail[] = []
      b.store.addEventListener('sync:progress', evt => { storeEvents.push(evt.detail) })
      const events: AnyProgressEvent[] = []
      b.broadcaster.push(headsOf(a))
      await b.store.synced({ onProgress: evt => events.push(evt), signal: AbortSignal.timeout(20_000) })

      expect(dec(await b.store.get(new Key(`/k${CHAIN - 1}`)))).to.equal(`v${CHAIN - 1}`)
      const types = byType(events)
      // every node merged, once, with its block's size
      const merged = types['crdt:merge:node'] ?? []
      expect(merged.map(e => String(e.detail.cid)).sort()).to.deep.equal([...sizes.keys()].sort())
      for (const evt of merged) expect(evt.detail.bytes).to.equal(sizes.get(String(evt.detail.cid)))
      // the DAG syncer's own events came through every fetch
      expect(types['bitswap:want-block']).to.have.lengthOf(CHAIN)
      const totalBytes = [...sizes.values()].reduce((sum, n) => sum + n, 0)
      // where the sync stands: counts only grow, the frontier ends at 0
      for (const list of [storeEvents, (types['crdt:sync:progress'] ?? []).map(e => e.detail as SyncProgressDetail)]) {
        expect(list.length).to.be.greaterThan(1)
        for (let i = 1; i < list.length; i++) {
          expect(list[i].nodesMerged).to.be.at.least(list[i - 1].nodesMerged)
          expect(list[i].bytesMerged).to.be.at.least(list[i - 1].bytesMerged)
        }
        expect(list.some(d => d.frontier > 0)).to.equal(true)
        expect(list.at(-1)).to.deep.equal({ nodesMerged: CHAIN, bytesMerged: totalBytes, frontier: 0, maxHeight: CHAIN })
      }
      // the synced() listener is gone once synced() resolved
      const after: AnyProgressEvent[] = []
      await b.store.synced({ onProgress: evt => after.push(evt) })
      await a.store.put(new Key('/late'), enc('x'))
      b.broadcaster.push(headsOf(a))
      await b.store.synced()
      expect(after).to.deep.equal([])
      expect(storeEvents.at(-1)).to.include({ nodesMerged: CHAIN + 1, frontier: 0 })
      // stopping is no sync step: no event
      const sent = storeEvents.length
      await b.store.stop()
      expect(storeEvents).to.have.lengthOf(sent)
    } finally {
      await b.store.stop()
      await a.store.stop()
    }
  })

  it('an onProgress that throws breaks neither a sync nor a write', async () => {
    const a = await writer()
    const b = await reader(a)
    try {
      const boom = (): void => { throw new Error('listener failed') }
      b.broadcaster.push(headsOf(a))
      await b.store.synced({ onProgress: boom, signal: AbortSignal.timeout(20_000) })
      expect(dec(await b.store.get(new Key(`/k${CHAIN - 1}`)))).to.equal(`v${CHAIN - 1}`)
      expect(await b.store.isDirty()).to.equal(false)
      expect(await b.store.pendingBranches()).to.deep.equal([])
      // (the blockstore's own events go to the blockstore's caller as the blockstore handles them)
      await b.store.put(new Key('/mine'), enc('1'), { onProgress: evt => { if (evt.type.startsWith('crdt:')) boom() } })
      expect(b.store.heads()[0].height).to.equal(CHAIN + 1)
    } finally {
      await b.store.stop()
      await a.store.stop()
    }
  })

  it('repair({ onProgress }) reports the nodes it merges and the DAG syncer\'s fetches', async () => {
    const a = await writer()
    const b = await reader(a)
    try {
      // only the head and the node below it can be fetched (the head's priority is checked against its link's claim): the walk stops there, leaving the store dirty
      const head = a.store.heads()[0].cid
      const below = decodeNode(head, await readBlock(a.blockstore, head)).links[0]
      b.blockstore.offline = true
      b.blockstore.reachable.add(head.toString())
      b.blockstore.reachable.add(below.toString())
      b.broadcaster.push(headsOf(a))
      await b.store.synced({ signal: AbortSignal.timeout(20_000) })
      expect(await b.store.isDirty()).to.equal(true)
      expect(await b.store.hasMerged(head)).to.equal(true)

      b.blockstore.offline = false
      const events: AnyProgressEvent[] = []
      await b.store.repair({ onProgress: evt => events.push(evt) })
      expect(await b.store.isDirty()).to.equal(false)
      const types = byType(events)
      expect(types['crdt:merge:node']).to.have.lengthOf(CHAIN - 1)
      // the node below the head was fetched already (to check the head)
      expect(types['bitswap:want-block']).to.have.lengthOf(CHAIN - 2)
      expect(types['crdt:sync:progress']?.at(-1)?.detail).to.include({ nodesMerged: CHAIN, frontier: 0 })
    } finally {
      await b.store.stop()
      await a.store.stop()
    }
  })

  it('the CLI\'s live counter follows a real sync through sync:progress events and ends with one "in sync" line', async () => {
    const a = await writer()
    const b = await reader(a)
    let out = ''
    let notices = 0
    const progress = new SyncProgress(b.store, { write: t => { out += t }, tty: true, interval: 0, onNotice: () => { notices++ } })
    progress.start()
    try {
      b.broadcaster.push(headsOf(a))
      await b.store.synced({ signal: AbortSignal.timeout(20_000) })
      const bytes = [...(await blockSizes(a.blockstore)).values()].reduce((sum, n) => sum + n, 0)
      expect(out).to.include(`in sync: merged ${CHAIN} blocks (${(bytes / 1024).toFixed(1)} KB)`)
      expect(out).to.include(`height ${CHAIN}\n`)
      expect(out).to.match(/syncing: \d+ blocks merged \([\d.]+ KB\), \d+ left, height \d+/)
      expect(out.match(/in sync/g)).to.have.lengthOf(1)
      expect(notices).to.equal(1)
    } finally {
      progress.stop()
      await b.store.stop()
      await a.store.stop()
    }
    expect(b.store.listenerCount('sync:progress')).to.equal(0)
  })
})
