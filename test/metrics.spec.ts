/**
 * Metrics (#14.6): with a libp2p `Metrics` component the store registers
 * counters (nodes merged, blocks fetched, bytes, local writes) and gauges
 * calculated when scraped (heads, max height, sync lag, queued heads);
 * `createHeliaCRDT()` registers them on the Helia node's libp2p metrics.
 * A small recording Metrics stands in for Prometheus; values are asserted
 * after a real replication.
 */

import { expect } from 'aegir/chai'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { METRIC_NAMES } from '../src/engine/store-metrics.js'
import { createHeliaCRDT, heliaDAGSyncer } from '../src/helia/index.js'
import { createCRDTDatastore, encodeBroadcast } from '../src/index.js'
import { createReplicaNode } from '../src/node/index.js'
import { waitFor } from './fixtures/network.js'
import { blockSizes, HandFedBroadcaster, RemoteBlockstore } from './fixtures/progress.js'
import { enc, memoryReplica } from './fixtures/stores.js'
import type { Counter, Metric, Metrics } from '@libp2p/interface'

/** Records every registration; counters and metrics keep their value, calculated ones their function */
class RecordingMetrics {
  public readonly values = new Map<string, number>()
  public readonly calculated = new Map<string, () => number | Promise<number>>()
  public readonly registered: string[] = []

  private register (name: string, options?: { calculate?(): number | Promise<number> }): Metric & Counter | undefined {
    this.registered.push(name)
    if (options?.calculate != null) {
      this.calculated.set(name, options.calculate)
      return undefined
    }
    this.values.set(name, 0)
    const set = (v: number): void => { this.values.set(name, v) }
    const get = (): number => this.values.get(name) ?? 0
    return {
      update: set,
      increment: (by = 1) => { set(get() + by) },
      decrement: (by = 1) => { set(get() - by) },
      reset: () => { set(0) },
      timer: () => () => {}
    }
  }

  /** A libp2p Metrics over this recorder (groups, histograms and summaries record their names only) */
  asMetrics (): Metrics {
    const register = this.register.bind(this)
    const group = (name: string, options?: any): any => {
      register(name, options)
      return { update () {}, increment () {}, decrement () {}, reset () {}, observe () {}, timer: () => () => {} }
    }
    return {
      trackMultiaddrConnection () {},
      trackProtocolStream () {},
      registerMetric: register as Metrics['registerMetric'],
      registerCounter: register as Metrics['registerCounter'],
      registerMetricGroup: group,
      registerCounterGroup: group,
      registerHistogram: group,
      registerHistogramGroup: group,
      registerSummary: group,
      registerSummaryGroup: group,
      traceFunction: ((_name: string, fn: any) => fn) as Metrics['traceFunction'],
      createTrace: () => undefined
    }
  }

  async read (name: string): Promise<number | undefined> {
    const calculate = this.calculated.get(name)
    return calculate != null ? calculate() : this.values.get(name)
  }
}

const CHAIN = 25

describe('metrics', function () {
  this.timeout(60_000)

  it('counts nodes merged, blocks fetched, bytes and writes, and gauges heads, height and sync lag, over a replication', async () => {
    const writerMetrics = new RecordingMetrics()
    const a = await memoryReplica({ repairInterval: 0 }, { metrics: writerMetrics.asMetrics() })
    for (let i = 0; i < CHAIN; i++) await a.store.put(new Key(`/k${i}`), enc(`v${i}`))
    expect(await writerMetrics.read(METRIC_NAMES.nodesWritten)).to.equal(CHAIN)
    expect(await writerMetrics.read(METRIC_NAMES.nodesMerged)).to.equal(0)

    const metrics = new RecordingMetrics()
    const blockstore = new RemoteBlockstore(a.blockstore)
    const broadcaster = new HandFedBroadcaster()
    const store = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore, broadcaster, metrics: metrics.asMetrics() }, { repairInterval: 0 })
    try {
      expect([...metrics.registered].sort()).to.deep.equal(Object.values(METRIC_NAMES).sort())
      expect(await metrics.read(METRIC_NAMES.heads)).to.equal(0)
      // the sync lag, read while the sync runs
      const lags: number[] = []
      store.addEventListener('sync:progress', () => { lags.push(Number(metrics.calculated.get(METRIC_NAMES.syncLag)?.())) })
      broadcaster.push(encodeBroadcast(a.store.heads().map(h => ({ cid: h.cid, dagName: h.dagName }))))
      await store.synced({ signal: AbortSignal.timeout(20_000) })

      const bytes = [...(await blockSizes(a.blockstore)).values()].reduce((sum, n) => sum + n, 0)
      expect(await metrics.read(METRIC_NAMES.nodesMerged)).to.equal(CHAIN)
      expect(await metrics.read(METRIC_NAMES.bytesMerged)).to.equal(bytes)
      expect(await metrics.read(METRIC_NAMES.blocksFetched)).to.equal(blockstore.fetched)
      expect(blockstore.fetched).to.equal(CHAIN)
      expect(await metrics.read(METRIC_NAMES.bytesFetched)).to.equal(bytes)
      expect(await metrics.read(METRIC_NAMES.nodesWritten)).to.equal(0)
      expect(await metrics.read(METRIC_NAMES.heads)).to.equal(1)
      expect(await metrics.read(METRIC_NAMES.maxHeight)).to.equal(CHAIN)
      expect(await metrics.read(METRIC_NAMES.syncLag)).to.equal(0)
      expect(await metrics.read(METRIC_NAMES.queuedHeads)).to.equal(0)
      expect(Math.max(...lags)).to.be.greaterThan(0)
      expect(lags.at(-1)).to.equal(0)

      // a restart registers nothing again and counts on
      await store.stop()
      await store.start()
      expect(metrics.registered).to.have.lengthOf(Object.values(METRIC_NAMES).length)
      await store.put(new Key('/local'), enc('x'))
      expect(await metrics.read(METRIC_NAMES.nodesWritten)).to.equal(1)
      expect(await metrics.read(METRIC_NAMES.maxHeight)).to.equal(CHAIN + 1)
    } finally {
      await store.stop()
      await a.store.stop()
    }
  })

  it('createHeliaCRDT() registers the store\'s metrics on the Helia node\'s libp2p metrics, and its DAG syncer passes onProgress on to bitswap', async () => {
    const recorders = [new RecordingMetrics(), new RecordingMetrics()]
    const nodes = await Promise.all(recorders.map(async (r, i) => createReplicaNode({
      listen: [`/memory/metrics-${i}-${Math.random().toString(36).slice(2)}`],
      metrics: () => r.asMetrics()
    })))
    // bitswap alone: no carried blocks, no sync protocol
    const init = { topic: 'metrics-test', rebroadcastInterval: 300, repairInterval: 0, broadcastBlocksMaxSize: 0, syncProtocol: false as const }
    const stores = await Promise.all(nodes.map(async node => createHeliaCRDT(node, init)))
    try {
      for (const r of recorders) expect(r.registered).to.include.members(Object.values(METRIC_NAMES))
      await nodes[1].libp2p.dial(nodes[0].libp2p.getMultiaddrs()[0])
      for (let i = 0; i < 5; i++) await stores[0].put(new Key(`/h${i}`), enc(`${i}`))
      await waitFor(async () => stores[1].has(new Key('/h4')), 30_000, 'the second replica to merge the writes')
      expect(await recorders[1].read(METRIC_NAMES.nodesMerged)).to.equal(5)
      expect(await recorders[1].read(METRIC_NAMES.blocksFetched)).to.be.at.least(5)
      expect(await recorders[1].read(METRIC_NAMES.maxHeight)).to.equal(5)
      expect(await recorders[1].read(METRIC_NAMES.syncLag)).to.equal(0)
      expect(await recorders[0].read(METRIC_NAMES.nodesWritten)).to.equal(5)

      // the DAG syncer hands onProgress to bitswap: its own events reach the caller
      const bytes = enc('a block only the first node has')
      const cid = CID.createV1(raw.code, await sha256.digest(bytes))
      await nodes[0].blockstore.put(cid, bytes)
      const types = new Set<string>()
      const chunks: Uint8Array[] = []
      for await (const chunk of heliaDAGSyncer(nodes[1]).get(cid, { onProgress: (evt: { type: string }) => { types.add(evt.type) }, signal: AbortSignal.timeout(20_000) } as any)) chunks.push(chunk)
      expect(chunks).to.deep.equal([bytes])
      expect([...types].filter(t => t.startsWith('bitswap:')), [...types].join(', ')).to.not.deep.equal([])
    } finally {
      await Promise.all(stores.map(async s => s.stop()))
      await Promise.all(nodes.map(async n => n.stop()))
    }
  })
})
