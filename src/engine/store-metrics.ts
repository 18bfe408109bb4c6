/**
 * The store's metrics, registered once (when the store is built) on an
 * optional libp2p `Metrics` component: counters for remote nodes merged and
 * their bytes, blocks and bytes received from the DAG syncer and local nodes
 * written; gauges, calculated when scraped, for heads, greatest height and
 * sync lag (known frontier left, announced heads waiting).
 *
 * Invariant: without a `Metrics` component every method is a no-op costing
 * one property check; nothing is registered again on restart.
 */

import type { Counter, Metrics } from '@libp2p/interface'

/** Names of the metrics the store registers */
export const METRIC_NAMES = {
  nodesMerged: 'datastore_crdt_nodes_merged_total',
  bytesMerged: 'datastore_crdt_bytes_merged_total',
  blocksFetched: 'datastore_crdt_blocks_fetched_total',
  bytesFetched: 'datastore_crdt_bytes_fetched_total',
  nodesWritten: 'datastore_crdt_nodes_written_total',
  heads: 'datastore_crdt_heads',
  maxHeight: 'datastore_crdt_max_height',
  syncLag: 'datastore_crdt_sync_lag',
  queuedHeads: 'datastore_crdt_queued_heads'
} as const

/** Where the gauges read their values when scraped */
export interface StoreGauges {
  heads(): number
  maxHeight(): number
  /** Known frontier left: nodes to fetch and merge, heads waiting or handled */
  syncLag(): number
  queuedHeads(): number
}

export class StoreMetrics {
  private readonly nodesMerged?: Counter
  private readonly bytesMerged?: Counter
  private readonly blocksFetched?: Counter
  private readonly bytesFetched?: Counter
  private readonly nodesWritten?: Counter

  constructor (metrics: Metrics | undefined, gauges: StoreGauges) {
    if (metrics == null) return
    this.nodesMerged = metrics.registerCounter(METRIC_NAMES.nodesMerged, { help: 'Remote DAG nodes merged' })
    this.bytesMerged = metrics.registerCounter(METRIC_NAMES.bytesMerged, { help: 'Bytes of the remote DAG nodes merged' })
    this.blocksFetched = metrics.registerCounter(METRIC_NAMES.blocksFetched, { help: 'Blocks received in full from the DAG syncer' })
    this.bytesFetched = metrics.registerCounter(METRIC_NAMES.bytesFetched, { help: 'Bytes of the blocks received from the DAG syncer' })
    this.nodesWritten = metrics.registerCounter(METRIC_NAMES.nodesWritten, { help: 'Local writes committed (a write split into several DAG nodes counts once)' })
    metrics.registerMetric(METRIC_NAMES.heads, { help: 'Current heads of every DAG', calculate: gauges.heads })
    metrics.registerMetric(METRIC_NAMES.maxHeight, { help: 'Greatest height among the heads', calculate: gauges.maxHeight })
    metrics.registerMetric(METRIC_NAMES.syncLag, { help: 'Known frontier left: DAG nodes to fetch and merge plus announced heads waiting or being handled', calculate: gauges.syncLag })
    metrics.registerMetric(METRIC_NAMES.queuedHeads, { help: 'Announced heads waiting for their turn', calculate: gauges.queuedHeads })
  }

  merged (bytes: number): void {
    this.nodesMerged?.increment()
    this.bytesMerged?.increment(bytes)
  }

  fetched (bytes: number): void {
    this.blocksFetched?.increment()
    this.bytesFetched?.increment(bytes)
  }

  written (): void {
    this.nodesWritten?.increment()
  }
}
