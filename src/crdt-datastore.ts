/**
 * The public face of the store: an interface-datastore `Datastore` whose
 * writes become Merkle-CRDT deltas and whose reads come from the materialised
 * OR-set.
 */

import { defaultLogger } from '@libp2p/logger'
import { BaseDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import { TypedEventEmitter } from 'main-event'
import * as varint from 'uint8-varint'
import { CRDTBatch, DeltaBuilder } from './batch.js'
import { DatastoreStoppedError, InvalidKeyError, InvalidOptionsError } from './errors.js'
import { Engine } from './engine.js'
import { cleanKey, Layout, LAYOUT_VERSION } from './layout.js'
import { Replicator } from './replicator.js'
import { dotDAG, printDAG } from './debug.js'
import { migrateLayout } from './migrate.js'
import { purgeDAG } from './purge.js'
import { createSnapshot } from './snapshot/create.js'
import { installSnapshot } from './snapshot/install.js'
import type { CreateSnapshotOptions } from './snapshot/create.js'
import type { InstallResult, InstallSnapshotOptions } from './snapshot/install.js'
import { Walker } from './walker.js'
import type { BatchOptions, KeyOp } from './batch.js'
import type { DAGViewOptions } from './debug.js'
import { MAX_DAG_NAME_BYTES } from './delta.js'
import type { DeltaElement } from './delta.js'
import type { DAGBlockstore } from './engine.js'
import type { Head } from './heads.js'
import type { SetChange } from './or-set.js'
import type { Broadcaster } from './replicator.js'
import type { ComponentLogger, Logger } from '@libp2p/interface'
import type { Datastore, KeyQuery, Pair, Query } from 'interface-datastore'
import type { AbortOptions, AwaitGenerator, AwaitIterable } from 'interface-store'
import type { CID } from 'multiformats/cid'
import type { TypedEventTarget } from 'main-event'

/** The collaborators a CRDT datastore is built from */
export interface CRDTDatastoreComponents {
  /** Where all CRDT state lives, under `init.namespace` */
  datastore: Datastore
  /** The DAG syncer: stores local blocks and fetches remote ones (Helia's blockstore fetches over bitswap) */
  blockstore: DAGBlockstore
  /** Announces and receives heads; absent = an offline replica */
  broadcaster?: Broadcaster
  /** Logger factory; defaults to `@libp2p/logger`'s */
  logger?: ComponentLogger
}

/** Plain options of a CRDT datastore, each with a `DEFAULT_*` constant */
export interface CRDTDatastoreInit {
  /**
   * Prefix under which the store keeps its state in `components.datastore`
   *
   * @default '/crdt'
   */
  namespace?: string
  /**
   * How often (ms, ±30%) to re-announce heads that no other replica announced
   * in that time, so late joiners learn them
   *
   * @default 60_000
   */
  rebroadcastInterval?: number
  /**
   * How many DAG blocks are fetched and merged at once while syncing. With
   * `multiHeadProcessing` off, the head blocks of up to four times as many
   * queued broadcasts are also fetched while earlier ones are merged
   *
   * @default 5
   */
  numWorkers?: number
  /**
   * How long (ms) to wait for one block from the DAG syncer; 0 waits forever
   *
   * @default 300_000
   */
  dagSyncerTimeout?: number
  /**
   * A batch commits by itself before its delta grows past this many bytes
   *
   * @default 1_048_576
   */
  maxBatchDeltaSize?: number
  /**
   * How often (ms) to resume unfinished walks when the store is dirty; 0 = never
   *
   * @default 3_600_000
   */
  repairInterval?: number
  /**
   * Walk the branches of several received heads at once instead of one after
   * the other (per DAG)
   *
   * @default false
   */
  multiHeadProcessing?: boolean
  /**
   * Gather local heads for this long (ms) and announce them in one broadcast,
   * dropping heads a later write superseded; 0 announces each write at once
   *
   * @default 0
   */
  broadcastBatchDelay?: number
}

export const DEFAULT_NAMESPACE = '/crdt'
export const DEFAULT_REBROADCAST_INTERVAL = 60_000
export const DEFAULT_NUM_WORKERS = 5
export const DEFAULT_DAG_SYNCER_TIMEOUT = 300_000
export const DEFAULT_MAX_BATCH_DELTA_SIZE = 1_048_576
export const DEFAULT_REPAIR_INTERVAL = 3_600_000
export const DEFAULT_MULTI_HEAD_PROCESSING = false
export const DEFAULT_BROADCAST_BATCH_DELAY = 0

/** Options of write methods */
export interface WriteOptions extends AbortOptions {
  /** Write to this named DAG instead of the default one */
  dagName?: string
}

/** Detail of a `put` event */
export interface PutEventDetail {
  key: Key
  value: Uint8Array
}

/** Detail of a `delete` event */
export interface DeleteEventDetail {
  key: Key
}

/** Detail of a `processed` event */
export interface ProcessedEventDetail {
  cid: CID
  priority: number
  dagName: string
  /** True for nodes written by this replica */
  local: boolean
}

/** Events of a CRDT datastore, in place of go-ds-crdt's hooks */
export interface CRDTDatastoreEvents {
  /** A key's visible value changed to `value`, through a local or a remote write */
  put: CustomEvent<PutEventDetail>
  /** A key disappeared, through a local or a remote delete */
  delete: CustomEvent<DeleteEventDetail>
  /** A DAG node was merged */
  processed: CustomEvent<ProcessedEventDetail>
}

/** Counters returned by `stats()` */
export interface CRDTStats {
  /** Current heads of every DAG */
  heads: Head[]
  /** Greatest height among the heads */
  maxHeight: number
  /** DAG fetches waiting or in flight, plus merges waiting for the lock */
  queuedJobs: number
  /** DAG nodes fetched from the DAG syncer since start */
  fetchedBlocks: number
}

const EMPTY = new Uint8Array(0)
const DAG_NAME = /^[^/]+(\/[^/]+)*$/

function checkNumber (name: string, value: number, min: number, integer = false): number {
  if (typeof value !== 'number' || Number.isNaN(value) || value < min || (integer && !Number.isInteger(value))) {
    throw new InvalidOptionsError(`${name} must be ${integer ? 'an integer' : 'a number'} >= ${min}, got ${String(value)}`)
  }
  return value
}

/** Checks a DAG name given by a user: empty for the default DAG, else a path without leading slash */
export function checkDagName (dagName: string | undefined): string {
  if (dagName == null || dagName === '') return ''
  if (typeof dagName !== 'string' || !DAG_NAME.test(dagName) || dagName.split('/').some(p => p === '.' || p === '..') || new TextEncoder().encode(dagName).byteLength > MAX_DAG_NAME_BYTES) {
    throw new InvalidOptionsError(`dagName must be a path like "app" or "app/users" of at most ${MAX_DAG_NAME_BYTES} bytes, got ${JSON.stringify(String(dagName).slice(0, 100))}`)
  }
  return dagName
}

/**
 * A Merkle-CRDT replicated `Datastore`. Build it with
 * `createCRDTDatastore()`.
 */
export class CRDTDatastore extends BaseDatastore implements TypedEventTarget<CRDTDatastoreEvents> {
  private readonly events = new TypedEventEmitter<CRDTDatastoreEvents>()
  private readonly datastore: Datastore
  private readonly blockstore: DAGBlockstore
  private readonly log: Logger
  private readonly layout: Layout
  private readonly engine: Engine
  private readonly walker: Walker
  private readonly replicator: Replicator
  private readonly maxBatchDeltaSize: number
  private readonly writes = new Set<Promise<unknown>>()
  private state: 'new' | 'started' | 'stopping' | 'stopped' = 'new'

  constructor (components: CRDTDatastoreComponents, init: CRDTDatastoreInit = {}) {
    super()
    if (components?.datastore == null || typeof components.datastore.batch !== 'function') {
      throw new InvalidOptionsError('components.datastore must be an interface-datastore Datastore')
    }
    if (components.blockstore == null || typeof components.blockstore.get !== 'function' || typeof components.blockstore.put !== 'function') {
      throw new InvalidOptionsError('components.blockstore must be an interface-blockstore Blockstore')
    }
    if (components.broadcaster != null && (typeof components.broadcaster.broadcast !== 'function' || typeof components.broadcaster.next !== 'function')) {
      throw new InvalidOptionsError('components.broadcaster must have broadcast() and next()')
    }
    const namespace = init.namespace ?? DEFAULT_NAMESPACE
    if (typeof namespace !== 'string' || !namespace.startsWith('/')) {
      throw new InvalidOptionsError(`namespace must be a key string such as "/crdt", got ${String(namespace)}`)
    }
    const rebroadcastInterval = checkNumber('rebroadcastInterval', init.rebroadcastInterval ?? DEFAULT_REBROADCAST_INTERVAL, 1)
    const numWorkers = checkNumber('numWorkers', init.numWorkers ?? DEFAULT_NUM_WORKERS, 1, true)
    const dagSyncerTimeout = checkNumber('dagSyncerTimeout', init.dagSyncerTimeout ?? DEFAULT_DAG_SYNCER_TIMEOUT, 0)
    this.maxBatchDeltaSize = checkNumber('maxBatchDeltaSize', init.maxBatchDeltaSize ?? DEFAULT_MAX_BATCH_DELTA_SIZE, 64, true)
    const repairInterval = checkNumber('repairInterval', init.repairInterval ?? DEFAULT_REPAIR_INTERVAL, 0)
    const broadcastBatchDelay = checkNumber('broadcastBatchDelay', init.broadcastBatchDelay ?? DEFAULT_BROADCAST_BATCH_DELAY, 0)
    const multiHeadProcessing = init.multiHeadProcessing ?? DEFAULT_MULTI_HEAD_PROCESSING
    if (typeof multiHeadProcessing !== 'boolean') {
      throw new InvalidOptionsError('multiHeadProcessing must be a boolean')
    }

    this.datastore = components.datastore
    this.blockstore = components.blockstore
    this.layout = new Layout(namespace)
    const logger = components.logger
    this.log = (logger ?? defaultLogger()).forComponent('datastore-crdt')
    this.engine = new Engine({
      datastore: this.datastore,
      blockstore: this.blockstore,
      layout: this.layout,
      log: this.log,
      dagSyncerTimeout,
      maxDeltaSize: this.maxBatchDeltaSize,
      onChanges: (changes, node) => { this.emitChanges(changes, node) }
    })
    this.walker = new Walker({ engine: this.engine, blockstore: this.blockstore, log: this.log, numWorkers })
    this.replicator = new Replicator({
      engine: this.engine,
      walker: this.walker,
      blockstore: this.blockstore,
      broadcaster: components.broadcaster,
      log: this.log,
      rebroadcastInterval,
      repairInterval,
      multiHeadProcessing,
      broadcastBatchDelay,
      lookAhead: numWorkers * 4
    })
  }

  /**
   * Loads the heads, detects an unclean previous shutdown (the store is then
   * marked dirty and repaired) and starts replicating.
   */
  async start (options?: AbortOptions): Promise<void> {
    if (this.state !== 'new') {
      throw new DatastoreStoppedError('A CRDT datastore can only be started once')
    }
    options?.signal?.throwIfAborted()
    const version = await this.datastore.has(this.layout.versionKey, options)
      ? varint.decode(await this.datastore.get(this.layout.versionKey, options))
      : undefined
    if (version != null && version > LAYOUT_VERSION) {
      throw new InvalidOptionsError(`The datastore holds CRDT layout version ${version}; this release reads up to ${LAYOUT_VERSION}`)
    }
    if (version == null || version < LAYOUT_VERSION) {
      await migrateLayout(this.datastore, this.layout, version, this.log, options)
    }
    if (await this.datastore.has(this.layout.badShutdownKey, options)) {
      this.log('previous run did not stop cleanly, marking the store dirty')
      await this.engine.markDirty(options)
    }
    await this.datastore.put(this.layout.badShutdownKey, EMPTY, options)
    await this.engine.heads.load(options)
    this.state = 'started'
    await this.replicator.start()
    this.log('started with %d heads, max height %d', this.engine.heads.all().length, this.engine.heads.maxHeight())
  }

  /**
   * Stops replicating and waits for every background task and pending write
   * to settle, then clears the bad-shutdown marker. The underlying datastore
   * and blockstore stay open: they belong to the caller.
   */
  async stop (options?: AbortOptions): Promise<void> {
    options?.signal?.throwIfAborted()
    if (this.state === 'stopped' || this.state === 'stopping' || this.state === 'new') {
      this.state = 'stopped'
      return
    }
    this.state = 'stopping'
    await Promise.allSettled([...this.writes])
    await this.replicator.stop()
    await this.engine.idle()
    this.state = 'stopped'
    await this.datastore.delete(this.layout.badShutdownKey)
    this.log('stopped')
  }

  // --- Datastore -----------------------------------------------------------

  override async put (key: Key, value: Uint8Array, options?: WriteOptions): Promise<Key> {
    this.checkOpen(options)
    const dagName = checkDagName(options?.dagName)
    const builder = new DeltaBuilder(this.maxBatchDeltaSize, dagName)
    builder.put(this.keyString(key), value)
    await this.track(this.writeOps(builder.take(), dagName, options))
    return key
  }

  override async get (key: Key, options?: AbortOptions): Promise<Uint8Array> {
    this.checkOpen(options)
    return this.engine.set.get(this.keyString(key), options)
  }

  override async has (key: Key, options?: AbortOptions): Promise<boolean> {
    this.checkOpen(options)
    return this.engine.set.has(this.keyString(key), options)
  }

  override async delete (key: Key, options?: WriteOptions): Promise<void> {
    this.checkOpen(options)
    const dagName = checkDagName(options?.dagName)
    await this.track(this.writeOps(new Map([[this.keyString(key), { remove: true }]]), dagName, options))
  }

  /** Writes all pairs as few DAG nodes as `maxBatchDeltaSize` allows, yielding keys once written */
  override async * putMany (source: AwaitIterable<Pair>, options?: WriteOptions): AsyncGenerator<Key> {
    yield * this.writeMany(source, (builder, { key, value }) => builder.put(this.keyString(key), value), pair => pair.key, options)
  }

  /** Deletes all keys in as few DAG nodes as possible, yielding keys once deleted */
  override async * deleteMany (source: AwaitIterable<Key>, options?: WriteOptions): AsyncGenerator<Key> {
    yield * this.writeMany(source, (builder, key) => builder.delete(this.keyString(key)), key => key, options)
  }

  /** Streams items into deltas, writing each one as it fills and yielding its keys once written */
  private async * writeMany <T> (source: AwaitIterable<T>, add: (builder: DeltaBuilder, item: T) => Map<string, KeyOp> | undefined, keyOf: (item: T) => Key, options?: WriteOptions): AsyncGenerator<Key> {
    this.checkOpen(options)
    const dagName = checkDagName(options?.dagName)
    const builder = new DeltaBuilder(this.maxBatchDeltaSize, dagName)
    let keys: Key[] = []
    for await (const item of source) {
      this.checkOpen(options)
      const sealed = add(builder, item)
      if (sealed != null) {
        await this.track(this.writeOps(sealed, dagName, options))
        yield * keys
        keys = []
      }
      keys.push(keyOf(item))
    }
    await this.track(this.writeOps(builder.take(), dagName, options))
    yield * keys
  }

  override async * getMany (source: AwaitIterable<Key>, options?: AbortOptions): AsyncGenerator<Pair> {
    this.checkOpen(options)
    for await (const key of source) {
      yield { key, value: await this.get(key, options) }
    }
  }

  /**
   * A batch: its puts and deletes become one delta (one DAG node, one
   * broadcast) on `commit()`, or several when it outgrows
   * `maxBatchDeltaSize`.
   */
  override batch (options?: BatchOptions): CRDTBatch {
    this.checkOpen()
    const dagName = checkDagName(options?.dagName)
    return new CRDTBatch(async (ops, dag, opts) => {
      this.checkOpen(opts)
      await this.track(this.writeOps(ops, dag, opts))
    }, key => this.keyString(key), this.maxBatchDeltaSize, dagName)
  }

  override query (q: Query, options?: AbortOptions): AwaitGenerator<Pair> {
    this.checkOpen(options)
    return super.query(q, options)
  }

  override queryKeys (q: KeyQuery, options?: AbortOptions): AwaitGenerator<Key> {
    this.checkOpen(options)
    return super.queryKeys(q, options)
  }

  override async * _all (q: Query, options?: AbortOptions): AsyncGenerator<Pair> {
    yield * this.engine.set.entries(q.prefix, options)
  }

  override async * _allKeys (q: KeyQuery, options?: AbortOptions): AsyncGenerator<Key> {
    yield * this.engine.set.keys(q.prefix, options)
  }

  // --- CRDT ----------------------------------------------------------------

  /** Counters for monitoring and progress display */
  stats (): CRDTStats {
    return {
      heads: this.engine.heads.all(),
      maxHeight: this.engine.heads.maxHeight(),
      queuedJobs: this.walker.queued + this.engine.queued,
      fetchedBlocks: this.walker.fetched
    }
  }

  /** The current heads, of every DAG or of one */
  heads (dagName?: string): Head[] {
    return dagName == null ? this.engine.heads.all() : this.engine.heads.list(checkDagName(dagName))
  }

  /** DAG nodes recorded as the frontier of a walk that has not finished */
  async pendingBranches (options?: AbortOptions): Promise<CID[]> {
    this.checkOpen(options)
    return this.engine.pendingBranches(options)
  }

  /** True when a sync failed or the last run did not stop cleanly, until a repair succeeds */
  async isDirty (options?: AbortOptions): Promise<boolean> {
    this.checkOpen(options)
    return this.engine.isDirty(options)
  }

  /** Marks the store dirty so the repair loop runs */
  async markDirty (options?: AbortOptions): Promise<void> {
    this.checkOpen(options)
    await this.engine.markDirty(options)
  }

  /**
   * Resumes every unfinished walk and marks the store clean when none is
   * left. Rejects with the first error when a branch still cannot be synced.
   */
  async repair (options?: AbortOptions): Promise<void> {
    this.checkOpen(options)
    await this.replicator.repair(options)
  }

  /**
   * Removes a named DAG: its heads, its blocks' set entries and processed
   * markers. Keys it wrote fall back to values from other DAGs, or vanish.
   * Returns the number of DAG nodes removed.
   */
  async purgeDAG (dagName: string, options?: AbortOptions): Promise<number> {
    this.checkOpen(options)
    const name = checkDagName(dagName)
    if (name === '') {
      throw new InvalidOptionsError('purgeDAG needs the name of a named DAG')
    }
    return purgeDAG({ engine: this.engine, blockstore: this.blockstore, datastore: this.datastore, log: this.log }, name, options)
  }

  /**
   * Writes a snapshot of the current state (live elements with their ids and
   * priorities, and tombstones) to the blockstore as a chunked dag-cbor DAG
   * and resolves to its root CID. Replicas that merged the same nodes get
   * the same CID. Rejects with `SnapshotNotReadyError` while a sync is
   * unfinished. Deletes nothing.
   */
  async snapshot (options?: CreateSnapshotOptions): Promise<CID> {
    this.checkOpen(options)
    return this.track(createSnapshot({ engine: this.engine, datastore: this.datastore, blockstore: this.blockstore, log: this.log }, options))
  }

  /**
   * Fetches the snapshot `cid` through the blockstore, verifies every block
   * and record, and merges it into this replica in one atomic batch; its
   * covered heads become heads unless already known. Rejects with
   * `InvalidSnapshotError` when any of it is bad, `BlockFetchError` when a
   * block cannot be fetched, changing nothing either way. `stop()` waits
   * for a snapshot or install under way.
   */
  async installSnapshot (cid: CID, options?: InstallSnapshotOptions): Promise<InstallResult> {
    this.checkOpen(options)
    return this.track(installSnapshot({ engine: this.engine, datastore: this.datastore, blockstore: this.blockstore, log: this.log }, cid, options))
  }

  /** An indented listing of the DAG from local blocks, for debugging small DAGs */
  async printDAG (options?: DAGViewOptions): Promise<string> {
    this.checkOpen(options)
    return printDAG(this.engine, this.blockstore, options)
  }

  /** The DAG as a Graphviz digraph, from local blocks */
  async dotDAG (options?: DAGViewOptions): Promise<string> {
    this.checkOpen(options)
    return dotDAG(this.engine, this.blockstore, options)
  }

  /**
   * Hands a broadcast payload to the store as if it came from the
   * Broadcaster. Useful for custom transports and tests.
   */
  async receive (data: Uint8Array, options?: AbortOptions): Promise<void> {
    this.checkOpen(options)
    await this.replicator.handleBroadcast(data)
  }

  // --- events --------------------------------------------------------------

  addEventListener<K extends keyof CRDTDatastoreEvents>(type: K, listener: ((evt: CRDTDatastoreEvents[K]) => void) | { handleEvent(evt: CRDTDatastoreEvents[K]): void } | null, options?: boolean | AddEventListenerOptions): void
  addEventListener (type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void {
    this.events.addEventListener(type as any, listener as any, options)
  }

  removeEventListener<K extends keyof CRDTDatastoreEvents>(type: K, listener?: ((evt: CRDTDatastoreEvents[K]) => void) | { handleEvent(evt: CRDTDatastoreEvents[K]): void } | null, options?: boolean | EventListenerOptions): void
  removeEventListener (type: string, listener?: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void {
    this.events.removeEventListener(type as any, listener as any, options)
  }

  dispatchEvent (event: Event): boolean {
    return this.events.dispatchEvent(event)
  }

  listenerCount (type: string): number {
    return this.events.listenerCount(type)
  }

  safeDispatchEvent<Detail>(type: keyof CRDTDatastoreEvents, detail?: CustomEventInit<Detail>): boolean {
    return this.events.safeDispatchEvent(type, detail)
  }

  // --- internals -----------------------------------------------------------

  private keyString (key: Key): string {
    // a Key from this module copy, or from another copy of interface-datastore
    if (!(key instanceof Key) && typeof (key as any)?.uint8Array !== 'function') {
      throw new InvalidKeyError(`Expected an interface-datastore Key, got ${key === null ? 'null' : typeof key}`)
    }
    return cleanKey(key.toString())
  }

  private checkOpen (options?: AbortOptions): void {
    if (this.state !== 'started') {
      throw new DatastoreStoppedError(this.state === 'new' ? 'The CRDT datastore has not been started' : 'The CRDT datastore has been stopped')
    }
    options?.signal?.throwIfAborted()
  }

  private async track <T> (write: Promise<T>): Promise<T> {
    this.writes.add(write)
    try {
      return await write
    } finally {
      this.writes.delete(write)
    }
  }

  private async writeOps (ops: Map<string, KeyOp>, dagName: string, options?: AbortOptions): Promise<void> {
    if (ops.size === 0) return
    const commit = await this.engine.commitLocal(async tx => {
      const elements: DeltaElement[] = []
      const tombstones: DeltaElement[] = []
      for (const [key, op] of ops) {
        if (op.remove) tombstones.push(...await this.engine.set.tombstonesFor(key, tx, options))
        if (op.value != null) elements.push({ key, id: '', value: op.value })
      }
      return { elements, tombstones, priority: 0, dagName }
    }, options)
    if (commit != null) {
      this.replicator.walkInBackground(commit.unprocessed)
      await this.replicator.announce(commit.head, commit.replaced)
      // a write split into several nodes failed part way: the parts that landed are announced
      if (commit.failure != null) throw commit.failure
    }
  }

  private emitChanges (changes: SetChange[], node?: ProcessedEventDetail): void {
    for (const change of changes) {
      const key = new Key(change.key, false)
      if (change.value == null) {
        this.events.safeDispatchEvent('delete', { detail: { key } })
      } else {
        this.events.safeDispatchEvent('put', { detail: { key, value: change.value } })
      }
    }
    if (node != null) {
      this.events.safeDispatchEvent('processed', { detail: node })
    }
  }
}

