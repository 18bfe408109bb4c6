/**
 * The sync meter: counts remote nodes merged and their bytes, and reports
 * where a sync stands (`SyncProgressDetail`) whenever it moves — after each
 * node a walk merges or fails, and after each announced head's turn. It
 * reports to three places: the store's `sync:progress` event, the
 * `onProgress` of the operation a walk serves (a `repair()`), and the
 * `onProgress` of every `synced()` call waiting (background walks fan out
 * to those, DAG-syncer events included).
 *
 * Invariant: the walker and the replicator call it once per step, after
 * their own counters moved, so `frontier` read here is never ahead of the
 * work (0 means nothing known is left to fetch or merge). Nothing is built
 * when nobody listens.
 */

import { CustomProgressEvent } from 'progress-events'
import type { DecodedNode } from '../codec/dag-node.js'
import type { SyncProgressDetail, SyncProgressEvents } from '../interfaces.js'
import type { ProgressEventListener, ProgressOptions } from 'progress-events'

/** What the walker and the replicator report */
export interface SyncProgress {
  /** A remote node was merged by a walk run with `options` */
  merged(node: DecodedNode, options?: ProgressOptions<SyncProgressEvents>): void
  /** The frontier may have shrunk: a node is done (merged or failed), or a head's turn ended */
  settled(options?: ProgressOptions<SyncProgressEvents>): void
  /** Passed as `onProgress` to background work: reaches every `synced()` caller listening */
  readonly onProgress: ProgressEventListener<SyncProgressEvents>
}

export interface SyncMeterComponents {
  /** The known frontier left (see `SyncProgressDetail.frontier`) */
  frontier(): number
  /** Greatest height among the heads */
  maxHeight(): number
  /** Whether the store's `sync:progress` event has listeners */
  hasListeners(): boolean
  /** Dispatches the store's `sync:progress` event */
  emit(detail: SyncProgressDetail): void
  /** Told of each remote node merged and each step (metrics) */
  onMerged?(bytes: number): void
  onSettled?(detail: SyncProgressDetail): void
}

/** Calls a caller's listener; what it throws is its own business and never stops a sync */
export function report <E> (listener: (evt: E) => void, evt: E): void {
  try {
    listener(evt)
  } catch {}
}

export class SyncMeter implements SyncProgress {
  public nodesMerged = 0
  public bytesMerged = 0
  private readonly components: SyncMeterComponents
  private readonly listeners = new Set<ProgressEventListener<SyncProgressEvents>>()

  constructor (components: SyncMeterComponents) {
    this.components = components
  }

  readonly onProgress = (evt: SyncProgressEvents): void => {
    for (const listener of this.listeners) report(listener, evt)
  }

  /** Counts from zero again (at start) */
  reset (): void {
    this.nodesMerged = 0
    this.bytesMerged = 0
  }

  /** Sends every background progress event to `listener` until the returned function is called */
  listen (listener?: ProgressEventListener<SyncProgressEvents>): () => void {
    if (listener == null) return () => {}
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  merged (node: DecodedNode, options?: ProgressOptions<SyncProgressEvents>): void {
    const bytes = node.size ?? 0
    this.nodesMerged++
    this.bytesMerged += bytes
    this.components.onMerged?.(bytes)
    const listener = this.listenerOf(options)
    if (listener != null) report(listener, new CustomProgressEvent('crdt:merge:node', { cid: node.cid, priority: node.delta.priority, dagName: node.delta.dagName, bytes }))
  }

  settled (options?: ProgressOptions<SyncProgressEvents>): void {
    const store = this.components.hasListeners()
    const listener = this.listenerOf(options)
    if (!store && listener == null && this.components.onSettled == null) return
    const detail = this.detail()
    this.components.onSettled?.(detail)
    if (store) this.components.emit(detail)
    if (listener != null) report(listener, new CustomProgressEvent('crdt:sync:progress', detail))
  }

  /** The listener of `options`, unless it is the fan-out to `synced()` callers and none is waiting */
  private listenerOf (options?: ProgressOptions<SyncProgressEvents>): ProgressEventListener<SyncProgressEvents> | undefined {
    const listener = options?.onProgress
    return listener === this.onProgress && this.listeners.size === 0 ? undefined : listener
  }

  detail (): SyncProgressDetail {
    return {
      nodesMerged: this.nodesMerged,
      bytesMerged: this.bytesMerged,
      frontier: this.components.frontier(),
      maxHeight: this.components.maxHeight()
    }
  }
}
