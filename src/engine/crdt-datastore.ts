/**
 * The public face of the store: an interface-datastore `Datastore` whose
 * writes become Merkle-CRDT deltas and whose reads come from the materialised
 * OR-set.
 */

import { defaultLogger } from '@libp2p/logger'
import { BaseDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import { TypedEventEmitter } from 'main-event'
import { CustomProgressEvent } from 'progress-events'
import * as varint from 'uint8-varint'
import { blockKey } from '../codec/block-key.js'
import { addSnapshotAnnouncement, readSnapshotAnnouncement } from '../codec/broadcast-snapshot.js'
import { MAX_DAG_NAME_BYTES } from '../codec/delta.js'
import { cleanKey, Layout, LAYOUT_VERSION } from '../crdt/layout.js'
import { migrateLayout } from '../crdt/migrate.js'
import { DatastoreStoppedError, InvalidKeyError, InvalidOptionsError } from '../errors.js'
import { Compaction, DEFAULT_COMPACTION_INTERVAL, DEFAULT_COMPACTION_MIN_NODES, DEFAULT_MAX_KNOWN_REPLICAS, DEFAULT_MEMBERSHIP_WINDOW } from '../snapshot/compaction.js'
import { coveredHeads, coverWalk, mergedBySnapshot } from '../snapshot/cover.js'
import { fetchVerified } from '../snapshot/fetch.js'
import { InstallingHeads, installSnapshot, resumeInstalls } from '../snapshot/install.js'
import { TrustGate } from '../trust/gate.js'
import { CRDTBatch, DeltaBuilder } from './batch.js'
import { dotDAG, printDAG } from './debug.js'
import { DEFAULT_MAX_MERGE_BYTES, DEFAULT_MAX_MERGE_NODES, Engine, MALFORMED_REASON } from './engine.js'
import { purgeDAG } from './purge.js'
import { Replicator } from './replicator.js'
import { StoreMetrics } from './store-metrics.js'
import { report, SyncMeter } from './sync-meter.js'
import { Walker } from './walker.js'
import type { BatchOptions, KeyOp } from './batch.js'
import type { DAGViewOptions } from './debug.js'
import type { DecodedNode } from '../codec/dag-node.js'
import type { DeltaElement } from '../codec/delta.js'
import type { Head } from '../crdt/heads.js'
import type { SetChange } from '../crdt/or-set.js'
import type { CRDTDatastore, CRDTDatastoreComponents, CRDTDatastoreEventListener, CRDTDatastoreEvents, CRDTDatastoreInit, CRDTStats, DAGBlockstore, ProcessedEventDetail, SyncOptions, WriteOptions } from '../interfaces.js'
import type { CompactionInit, CompactResult, HistoryStats } from '../snapshot/compaction.js'
import type { CreateSnapshotOptions, SnapshotComponents } from '../snapshot/create.js'
import type { InstallResult, InstallSnapshotOptions } from '../snapshot/install.js'
import type { WriterId } from '../trust/writers.js'
import type { ComponentLogger, Logger } from '@libp2p/interface'
import type { Datastore, KeyQuery, Pair, Query } from 'interface-datastore'
import type { AbortOptions, AwaitGenerator, AwaitIterable } from 'interface-store'
import type { CID } from 'multiformats/cid'

export const DEFAULT_NAMESPACE = '/crdt'
export const DEFAULT_REBROADCAST_INTERVAL = 60_000
export const DEFAULT_NUM_WORKERS = 5
export const DEFAULT_DAG_SYNCER_TIMEOUT = 300_000
export const DEFAULT_MAX_BATCH_DELTA_SIZE = 1_048_576
export const DEFAULT_REPAIR_INTERVAL = 3_600_000
export const DEFAULT_MULTI_HEAD_PROCESSING = false
export const DEFAULT_BROADCAST_BATCH_DELAY = 0
export const DEFAULT_ANNOUNCE_INTERVAL = 5
export const DEFAULT_HEAD_TIMEOUT = 10_000
export const DEFAULT_MAX_BLOCK_SIZE = 2 * 1024 * 1024
export const DEFAULT_MAX_FETCH_ATTEMPTS = 5
export const DEFAULT_MAX_QUEUED_HEADS = 4096
/** Heads of one announcer kept waiting at most */
export const MAX_QUEUED_HEADS_PER_ANNOUNCER = 1024
/** Failed heads in a row after which an announcer is served only when nobody else waits, one head at a time */
export const PENALTY_THRESHOLD = 3
/** Announced heads handled at once, per `numWorkers` */
export const HEAD_SLOTS_PER_WORKER = 4
export const DEFAULT_BROADCAST_BLOCKS_MAX_SIZE = 262_144

const EMPTY = new Uint8Array(0)
/** Rebroadcast intervals before an announced snapshot that could not be installed is tried again */
const JOIN_RETRY_INTERVALS = 10
/** Announced snapshots remembered at most as not installable */
const MAX_JOIN_FAILURES = 64

/** `get` of `getter` calling `onBlock` with its size after each block is received in full */
function countedGet (getter: Pick<DAGBlockstore, 'get'>, onBlock: (bytes: number) => void): DAGBlockstore['get'] {
  return async function * (cid: CID, options?: AbortOptions): AsyncGenerator<Uint8Array> {
    let bytes = 0
    for await (const chunk of getter.get(cid, options)) {
      bytes += chunk.byteLength
      yield chunk
    }
    onBlock(bytes)
  }
}

/** The fetching side of `blockstore` (and of its sessions), counting every block received */
function countingBlockstore (blockstore: DAGBlockstore, onBlock: (bytes: number) => void): DAGBlockstore {
  const counted: DAGBlockstore = {
    get: countedGet(blockstore, onBlock),
    put: (cid, bytes, options) => blockstore.put(cid, bytes, options),
    has: (cid, options) => blockstore.has(cid, options)
  }
  const putMany = blockstore.putMany?.bind(blockstore)
  if (putMany != null) counted.putMany = putMany
  const getLocal = blockstore.getLocal?.bind(blockstore)
  if (getLocal != null) {
    counted.getLocal = async (cid, options) => {
      const found = await getLocal(cid, options)
      if (found != null) onBlock(found.bytes.byteLength)
      return found
    }
  }
  const createSession = blockstore.createSession?.bind(blockstore)
  if (createSession != null) {
    counted.createSession = (root, options) => ({ get: countedGet(createSession(root, options), onBlock) })
  }
  return counted
}
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
 * The implementation of `CRDTDatastore`. It is not exported from the
 * package: `createCRDTDatastore()` builds it and hands out the interface,
 * whose events callers can listen to but not dispatch (the emitter is
 * private and this class has no `dispatchEvent`).
 *
 * Lifecycle contract: reads (`get`, `has`, `getMany`, `query`,
 * `queryKeys`) come from the local state and are served whether the store
 * runs or not — before the first `start()` and after `stop()` — as long as
 * the underlying datastore is open (Helia reads its datastore before it
 * starts it). Everything else (writes, batches, `synced()`, `receive()`,
 * repair and DAG methods) throws `DatastoreStoppedError` unless the store
 * is started. `heads()` is empty until the first `start()` loads them.
 */
export class DefaultCRDTDatastore extends BaseDatastore implements CRDTDatastore {
  private readonly events = new TypedEventEmitter<CRDTDatastoreEvents>()
  private readonly datastore: Datastore
  private readonly blockstore: DAGBlockstore
  private readonly log: Logger
  private readonly logger: ComponentLogger
  private readonly layout: Layout
  private readonly engine: Engine
  private readonly walker: Walker
  private readonly replicator: Replicator
  private readonly meter: SyncMeter
  private readonly metrics: StoreMetrics
  private readonly gate: TrustGate
  private readonly maxBatchDeltaSize: number
  private readonly writes = new Set<Promise<unknown>>()
  /** The blockstore as walks use it (fetches counted) */
  private readonly fetcher: DAGBlockstore
  private readonly compaction: Compaction
  private readonly compactionInit?: CompactionInit
  private compactionTimer?: ReturnType<typeof setTimeout>
  /** Aborted first thing by `stop()`: snapshot work started by payloads (considering, joining) */
  private background?: AbortController
  /** Announced snapshots installed (or being installed) by `joinFromSnapshot` */
  private readonly joined = new Set<string>()
  /** Announced snapshots `joinFromSnapshot` could not install, with when (not tried again for `joinRetryAfter` ms) */
  private readonly joinFailed = new Map<string, number>()
  /** Time (ms) to fetch the root of an announced snapshot to join from (the head deadline) */
  private readonly joinRootTimeout: number
  /** Time (ms) to fetch each other block of it (`dagSyncerTimeout`, or the default when that is 0) */
  private readonly joinBlockTimeout: number
  /** Time (ms) before an announced snapshot that could not be installed is tried again */
  private readonly joinRetryAfter: number
  /** Merged nodes whose blocks are kept: last scan plus nodes merged since */
  private historyNodes = 0
  /** Whether an installed snapshot recorded covered heads (undefined: not looked up yet) */
  private hasCovered?: boolean
  /** Covered heads of the installs under way */
  private readonly installing = new InstallingHeads()
  private state: 'new' | 'started' | 'stopping' | 'stopped' = 'new'
  private starting?: Promise<void>
  private stopping?: Promise<void>
  /** Blocks received from the DAG syncer since start (see `stats()`) */
  private fetchedBlocks = 0

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
    const headTimeout = checkNumber('headTimeout', init.headTimeout ?? DEFAULT_HEAD_TIMEOUT, 1)
    const maxBlockSize = checkNumber('maxBlockSize', init.maxBlockSize ?? DEFAULT_MAX_BLOCK_SIZE, 1024, true)
    const maxFetchAttempts = checkNumber('maxFetchAttempts', init.maxFetchAttempts ?? DEFAULT_MAX_FETCH_ATTEMPTS, 1, true)
    const maxQueuedHeads = checkNumber('maxQueuedHeads', init.maxQueuedHeads ?? DEFAULT_MAX_QUEUED_HEADS, 1, true)
    this.maxBatchDeltaSize = checkNumber('maxBatchDeltaSize', init.maxBatchDeltaSize ?? DEFAULT_MAX_BATCH_DELTA_SIZE, 64, true)
    const repairInterval = checkNumber('repairInterval', init.repairInterval ?? DEFAULT_REPAIR_INTERVAL, 0)
    const broadcastBatchDelay = checkNumber('broadcastBatchDelay', init.broadcastBatchDelay ?? DEFAULT_BROADCAST_BATCH_DELAY, 0)
    const announceInterval = checkNumber('announceInterval', init.announceInterval ?? DEFAULT_ANNOUNCE_INTERVAL, 0)
    const multiHeadProcessing = init.multiHeadProcessing ?? DEFAULT_MULTI_HEAD_PROCESSING
    if (typeof multiHeadProcessing !== 'boolean') {
      throw new InvalidOptionsError('multiHeadProcessing must be a boolean')
    }

    this.datastore = components.datastore
    this.blockstore = components.blockstore
    this.layout = new Layout(namespace)
    // one logger per component: DEBUG=datastore-crdt:walker* shows the walks alone
    const logger = components.logger ?? defaultLogger()
    this.logger = logger
    this.log = logger.forComponent('datastore-crdt')
    this.engine = new Engine({
      datastore: this.datastore,
      blockstore: this.blockstore,
      layout: this.layout,
      log: logger.forComponent('datastore-crdt:engine'),
      dagSyncerTimeout,
      maxDeltaSize: this.maxBatchDeltaSize,
      maxBlockSize,
      maxFetchAttempts,
      maxMergeNodes: checkNumber('maxMergeNodes', init.maxMergeNodes ?? DEFAULT_MAX_MERGE_NODES, 1, true),
      maxMergeBytes: checkNumber('maxMergeBytes', init.maxMergeBytes ?? DEFAULT_MAX_MERGE_BYTES, 0, true),
      onChanges: (changes, node) => { this.emitChanges(changes, node) },
      mergedBySnapshot: async (tx, node, options) => {
        if (this.hasCovered !== true || !(await mergedBySnapshot(this.layout, tx, node, options))) return false
        const id = blockKey(node.cid)
        // an install merging its element chunks may not have merged all of this node's yet: it still will
        this.installing.settled(id)
        // a covered head of an install under way: the install would make it a head
        return this.installing.has(id) ? 'head' : true
      }
    })
    // counters and gauges on components.metrics, when given (no-ops otherwise)
    this.metrics = new StoreMetrics(components.metrics, {
      heads: () => this.engine.heads.all().length,
      maxHeight: () => this.engine.heads.maxHeight(),
      syncLag: () => this.meter.detail().frontier,
      queuedHeads: () => this.replicator.headStats.queued
    })
    // every fetch (walks, heads, heads fetched ahead) goes through this wrapper, which counts blocks received
    const topic = init.topic ?? (components.broadcaster as { topic?: unknown } | undefined)?.topic
    this.gate = new TrustGate({
      datastore: this.datastore,
      namespace: this.layout.namespace,
      topic: typeof topic === 'string' ? topic : '',
      writers: init.writers,
      privateKey: components.privateKey,
      log: this.log.newScope?.('trust') ?? this.log
    })
    const fetcher = countingBlockstore(this.blockstore, bytes => {
      this.fetchedBlocks++
      this.metrics.fetched(bytes)
    })
    // where a sync stands: the walker and the replicator report each step to it
    this.meter = new SyncMeter({
      frontier: () => this.walker.queued + this.replicator.headStats.queued + this.replicator.headStats.inFlight,
      maxHeight: () => this.engine.heads.maxHeight(),
      hasListeners: () => this.events.listenerCount('sync:progress') > 0,
      emit: detail => { this.events.safeDispatchEvent('sync:progress', { detail }) },
      onMerged: bytes => { this.metrics.merged(bytes) }
    })
    this.fetcher = fetcher
    this.walker = new Walker({ engine: this.engine, blockstore: fetcher, log: logger.forComponent('datastore-crdt:walker'), numWorkers, dagSyncerTimeout, progress: this.meter })
    this.replicator = new Replicator({
      engine: this.engine,
      walker: this.walker,
      blockstore: fetcher,
      broadcaster: components.broadcaster,
      log: logger.forComponent('datastore-crdt:replicator'),
      rebroadcastInterval,
      repairInterval,
      multiHeadProcessing,
      broadcastBatchDelay,
      announceInterval,
      headSlots: numWorkers * HEAD_SLOTS_PER_WORKER,
      headTimeout: dagSyncerTimeout > 0 ? Math.min(headTimeout, dagSyncerTimeout) : headTimeout,
      maxQueuedHeadsPerAnnouncer: Math.min(MAX_QUEUED_HEADS_PER_ANNOUNCER, maxQueuedHeads),
      maxQueuedHeads,
      penaltyThreshold: PENALTY_THRESHOLD,
      isCovered: async (node, options) => this.isCovered(node, options),
      decorate: payload => this.compaction.announcing ? addSnapshotAnnouncement(payload, this.compaction.announced) : payload,
      onPayload: async (data, from, options) => {
        // the payload's snapshot announcement, read once for both; stop() aborts what it starts before
        // waiting for it (a fetch of a snapshot nobody serves would hold stop() up)
        const announcement = readSnapshotAnnouncement(data)
        const signal = this.background == null ? options.signal : AbortSignal.any([this.background.signal, ...(options.signal == null ? [] : [options.signal])])
        this.compaction.onPayload(announcement, from, p => { this.track(p).catch(() => {}) }, { signal })
        await this.joinFromSnapshot(announcement.snapshot, { signal })
      },
      broadcastBlocksMaxSize: checkNumber('broadcastBlocksMaxSize', init.broadcastBlocksMaxSize ?? DEFAULT_BROADCAST_BLOCKS_MAX_SIZE, 0),
      progress: this.meter,
      gate: this.gate
    })
    if (init.compaction != null && (typeof init.compaction !== 'object')) {
      throw new InvalidOptionsError('compaction must be an object { interval, minNodes, membershipWindow, maxKnownReplicas }')
    }
    this.compactionInit = init.compaction == null
      ? undefined
      : {
          interval: checkNumber('compaction.interval', init.compaction.interval ?? DEFAULT_COMPACTION_INTERVAL, 0),
          minNodes: checkNumber('compaction.minNodes', init.compaction.minNodes ?? DEFAULT_COMPACTION_MIN_NODES, 0, true),
          membershipWindow: checkNumber('compaction.membershipWindow', init.compaction.membershipWindow ?? DEFAULT_MEMBERSHIP_WINDOW, 1),
          maxKnownReplicas: checkNumber('compaction.maxKnownReplicas', init.compaction.maxKnownReplicas ?? DEFAULT_MAX_KNOWN_REPLICAS, 1, true)
        }
    this.joinRootTimeout = dagSyncerTimeout > 0 ? Math.min(headTimeout, dagSyncerTimeout) : headTimeout
    this.joinBlockTimeout = dagSyncerTimeout > 0 ? dagSyncerTimeout : DEFAULT_DAG_SYNCER_TIMEOUT
    this.joinRetryAfter = JOIN_RETRY_INTERVALS * rebroadcastInterval
    this.compaction = new Compaction({ engine: this.engine, datastore: this.datastore, blockstore: this.blockstore, log: this.log }, {
      membershipWindow: this.compactionInit?.membershipWindow ?? DEFAULT_MEMBERSHIP_WINDOW,
      maxKnownReplicas: this.compactionInit?.maxKnownReplicas ?? DEFAULT_MAX_KNOWN_REPLICAS,
      settle: components.broadcaster == null ? 0 : 2 * rebroadcastInterval,
      onPassed: () => { this.track(this.replicator.announceHeads()).catch(() => {}) },
      // LevelDB's compaction of what compact() deleted: stop() awaits it
      onBackground: work => { this.track(work).catch(() => {}) }
    }, this.compactionInit != null)
  }

  /**
   * Loads the heads, detects an unclean previous shutdown (the store is then
   * marked dirty and repaired) and starts replicating. Idempotent: calling it
   * on a started store does nothing, and calls made while it starts share
   * one start. A stopped store can be started again (components such as
   * Helia and libp2p start and stop the datastore they are given).
   */
  async start (options?: AbortOptions): Promise<void> {
    options?.signal?.throwIfAborted()
    if (this.state === 'started') return
    if (this.starting != null) return this.starting
    if (this.stopping != null) await this.stopping
    this.starting = this.open(options).finally(() => { this.starting = undefined })
    return this.starting
  }

  private async open (options?: AbortOptions): Promise<void> {
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
    await this.gate.load(options)
    this.gate.rejected = 0
    this.fetchedBlocks = 0
    this.meter.reset()
    await this.compaction.start(options)
    // a replica that installed a snapshot (or compacted, which may have dropped the install's covered-head records) may hold elements of nodes it never processed
    this.hasCovered = this.compaction.summary().compacted != null || (await coveredHeads(this.snapshotComponents(), options)).length > 0
    if (await resumeInstalls({ ...this.snapshotComponents(), installing: this.installing }, options)) this.hasCovered = true
    this.state = 'started'
    this.background = new AbortController()
    await this.replicator.start()
    this.scheduleCompaction()
    this.log('started with %d heads, max height %d', this.engine.heads.all().length, this.engine.heads.maxHeight())
  }

  /**
   * Stops replicating and waits for every background task and pending write
   * to settle, then clears the bad-shutdown marker. The underlying datastore
   * and blockstore stay open: they belong to the caller. Calling it on a
   * store that is not running does nothing; `start()` may follow.
   */
  async stop (options?: AbortOptions): Promise<void> {
    options?.signal?.throwIfAborted()
    if (this.starting != null) await this.starting.catch(() => {})
    if (this.stopping != null) return this.stopping
    if (this.state !== 'started') return
    this.stopping = this.close().finally(() => { this.stopping = undefined })
    return this.stopping
  }

  private async close (): Promise<void> {
    this.state = 'stopping'
    this.background?.abort()
    clearTimeout(this.compactionTimer)
    this.compactionTimer = undefined
    await Promise.allSettled([...this.writes])
    await this.replicator.stop()
    await this.engine.idle()
    this.state = 'stopped'
    await this.datastore.delete(this.layout.badShutdownKey)
    this.log('stopped')
  }

  /**
   * Resolves once everything other replicas announced before this call has
   * been merged: every broadcast received so far has had its heads fetched
   * and their branches walked. A head whose blocks could not be fetched
   * within `dagSyncerTimeout` counts as handled; the store is then dirty
   * (see `isDirty()`) and a repair retries it. Announcements arriving after
   * the call are not waited for. Without a broadcaster it resolves at once.
   *
   * @example
   * ```ts
   * await store.synced({ signal: AbortSignal.timeout(30_000) })
   * ```
   */
  async synced (options?: SyncOptions): Promise<void> {
    this.checkOpen(options)
    const unlisten = this.meter.listen(options?.onProgress)
    try {
      await this.replicator.synced(options)
    } finally {
      unlisten()
    }
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

  /** Reads the local state; served also while the store is not running */
  override async get (key: Key, options?: AbortOptions): Promise<Uint8Array> {
    this.checkReadable(options)
    return this.engine.set.get(this.keyString(key), options)
  }

  override async has (key: Key, options?: AbortOptions): Promise<boolean> {
    this.checkReadable(options)
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
    this.gate.checkWriter()
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
    this.checkReadable(options)
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
    this.checkReadable(options)
    return super.query(q, options)
  }

  override queryKeys (q: KeyQuery, options?: AbortOptions): AwaitGenerator<Key> {
    this.checkReadable(options)
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
    const heads = this.replicator.headStats
    return {
      heads: this.engine.heads.all(),
      maxHeight: this.engine.heads.maxHeight(),
      queuedJobs: this.walker.queued + this.engine.queued + heads.queued + heads.inFlight,
      fetchedBlocks: this.fetchedBlocks,
      queuedHeads: heads.queued,
      headsInFlight: heads.inFlight,
      droppedHeads: heads.dropped,
      penalisedAnnouncers: heads.penalisedAnnouncers,
      walks: heads.walks,
      givenUpBranches: this.engine.gaveUp,
      receivedBroadcasts: this.replicator.received,
      writers: this.gate.list(),
      canWrite: this.gate.canWrite,
      rejectedBroadcasts: this.gate.rejected,
      history: { nodes: this.historyNodes, ...this.compaction.summary() }
    }
  }

  // --- trusted mode ----------------------------------------------------------

  /**
   * Replaces the writers of trusted mode, persisted before it takes effect
   * (and kept over `init.writers` at the next start). Heads signed by a
   * writer removed here are refused from now on; what it wrote before stays
   * merged. `null` returns the store to open mode. Throws
   * `InvalidOptionsError` for anything that is not an Ed25519 peer ID or key.
   *
   * @example
   * ```ts
   * await store.setWriters([alice.toString(), bob.toString()])
   * ```
   */
  async setWriters (writers: WriterId[] | null, options?: AbortOptions): Promise<void> {
    this.checkOpen(options)
    await this.gate.set(writers, options)
    this.log('writers set: %s', writers == null ? 'open mode' : `${this.gate.list()?.length ?? 0} writers`)
  }

  /** This replica's peer ID as a writer (from `components.privateKey`), when it has a key */
  writerId (): string | undefined {
    return this.gate.self
  }

  /**
   * Whether a payload passes this store's trusted-mode rules (always in open
   * mode): signed for this store's topic by a current writer. Transports
   * use it to drop foreign payloads before relaying them
   */
  async admitsBroadcast (data: Uint8Array): Promise<boolean> {
    return this.gate.check(data)
  }

  /** The current heads, of every DAG or of one */
  heads (dagName?: string): Head[] {
    return dagName == null ? this.engine.heads.all() : this.engine.heads.list(checkDagName(dagName))
  }

  /** Whether the DAG node `cid` has been merged into this store */
  async hasMerged (cid: CID, options?: AbortOptions): Promise<boolean> {
    this.checkOpen(options)
    return this.engine.isProcessed(cid, options)
  }

  /** DAG nodes recorded as the frontier of a walk that has not finished */
  async pendingBranches (options?: AbortOptions): Promise<CID[]> {
    this.checkOpen(options)
    return this.engine.pendingBranches(options)
  }

  /**
   * DAG nodes whose branch was given up (malformed, or no block after
   * `maxFetchAttempts` fetches), with the reason; they are tried again now
   * and then and whenever an announcer is heard from again
   */
  async givenUpBranches (options?: AbortOptions): Promise<Array<{ cid: CID, reason: string, refusedBy?: string[] }>> {
    this.checkOpen(options)
    // whether a merged node links to it is the engine's own bookkeeping
    return (await this.engine.givenUp(options)).map(({ cid, reason, refusedBy }) => refusedBy == null ? { cid, reason } : { cid, reason, refusedBy })
  }

  /** Whether this replica holds every node below its heads: no walk under way or waiting, no unfinished branch */
  async holdsAllBelowHeads (options?: AbortOptions): Promise<boolean> {
    this.checkOpen(options)
    // a walk's head is a head before the nodes below it are all merged
    if (this.walker.walks > 0 || this.walker.queued > 0) return false
    return !(await this.engine.hasPending(options))
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
  async repair (options?: SyncOptions): Promise<void> {
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
    return purgeDAG({ engine: this.engine, blockstore: this.blockstore, datastore: this.datastore, log: this.logger.forComponent('datastore-crdt:purge') }, name, options)
  }

  /**
   * Writes a snapshot of the current state (per key the live elements that
   * are not overwritten, with their ids and priorities; the tombstones; the
   * nodes it covers) to the blockstore as a chunked dag-cbor DAG and
   * resolves to its root CID. A snapshot is also a removal: every element of
   * a covered node it does not list (an overwritten value) is removed, here
   * at once and on every replica that passes or installs it, so an
   * overwritten value never comes back, even after a delete that missed it.
   * No visible value changes. Replicas that merged the same nodes and applied
   * the same snapshots get the same CID. Rejects with
   * `SnapshotNotReadyError` while a sync is unfinished. Deletes no block.
   */
  async snapshot (options?: CreateSnapshotOptions): Promise<CID> {
    this.checkOpen(options)
    const cid = await this.track(this.compaction.snapshot(options))
    this.gate.made(cid)
    return cid
  }

  /**
   * Fetches the snapshot `cid` through the blockstore, verifies every block
   * and record, and merges it into this replica (chunk by chunk, finished by
   * `start()` after a crash); its covered nodes count as merged, its covered
   * heads become heads unless already known, and its removal is applied (an
   * element of a covered node that it does not list is removed here). Rejects with
   * `InvalidSnapshotError` when any of it is bad, `BlockFetchError` when a
   * block cannot be fetched, changing nothing either way. In trusted mode
   * only a snapshot that a current writer announced in a broadcast it
   * signed, or that this replica made, is installed: any other rejects
   * with `UntrustedSnapshotError` before anything is fetched. `stop()`
   * waits for a snapshot or install under way.
   */
  async installSnapshot (cid: CID, options?: InstallSnapshotOptions): Promise<InstallResult> {
    this.checkOpen(options)
    const result = await this.track(installSnapshot({ engine: this.engine, datastore: this.datastore, blockstore: this.blockstore, log: this.logger.forComponent('datastore-crdt:snapshot'), checkSnapshot: snapshot => { this.gate.checkSnapshot(snapshot) }, installing: this.installing }, cid, options))
    this.hasCovered = true
    // installed = passed: announced when it includes the removals announced here (a joiner relies on it);
    // the install is complete whatever this says (the next announcement of it retries)
    await this.track(this.compaction.consider(cid, options)).catch(err => {
      this.log.error('installed snapshot %c but could not pass it - %e', cid, err)
    })
    return result
  }

  /**
   * Makes a snapshot of the current heads and, once every known replica has
   * passed it (announced it in its broadcasts), deletes the blocks of the
   * DAG nodes it covers and the set entries it no longer needs (element
   * markers of tombstoned elements; tombstones and processed markers stay).
   * Resolves once this replica has compacted what it may: with nothing
   * removed and `waiting` set while a known replica has not passed it or
   * announces no snapshot support (go-ds-crdt). Atomic across crashes: an
   * interrupted compaction is finished by the next `start()`. Rejects with
   * `SnapshotNotReadyError` while a sync is unfinished.
   */
  async compact (options?: AbortOptions): Promise<CompactResult> {
    this.checkOpen(options)
    const result = await this.track(this.compaction.compact(options))
    if (result.removed.blocks > 0 || result.removed.entries > 0) await this.historyStats(options)
    return result
  }

  /** Scans the history kept (merged nodes whose blocks are here, and their bytes); updates `stats().history` */
  async historyStats (options?: AbortOptions): Promise<HistoryStats> {
    this.checkOpen(options)
    const history = await this.track(this.compaction.history(options))
    this.historyNodes = history.nodes
    return history
  }

  /**
   * Installs the snapshot a payload announces, before its heads are walked,
   * when this replica has no heads yet (a fresh replica joins from it and
   * then syncs only the DAG above it), is dirty (a sync failed: a replica
   * back from a long absence whose peers compacted the history it lacks) or
   * has a branch given up for lack of its blocks (see `needsSnapshot`).
   * The install is a merge, so the replica's own writes stay. Bounded: the
   * root within the head deadline (an announcement may outlive its
   * snapshot), each chunk within `dagSyncerTimeout`; a snapshot that could
   * not be installed is not tried again for `JOIN_RETRY_INTERVALS`
   * rebroadcast intervals, so a stale announcement does not hold up every
   * payload that repeats it.
   */
  private async joinFromSnapshot (snapshot: CID | undefined, options: AbortOptions): Promise<void> {
    if (snapshot == null) return
    const key = snapshot.toString()
    if (this.joined.has(key)) return
    const failed = this.joinFailed.get(key)
    if (failed != null && Date.now() - failed < this.joinRetryAfter) return
    if (!(await this.needsSnapshot(options))) return
    this.joined.add(key)
    this.joinFailed.delete(key)
    try {
      // the root first, within the head deadline: an announcement can outlive the snapshot (its maker
      // compacted a newer one), and this runs before the payload's heads are queued
      await fetchVerified(this.fetcher, snapshot, this.joinRootTimeout, options)
      const result = await this.installSnapshot(snapshot, { ...options, blockTimeout: this.joinBlockTimeout })
      this.log('joined from snapshot %c: %d new heads, %d keys changed', snapshot, result.newHeads, result.changes)
    } catch (err: any) {
      options.signal?.throwIfAborted()
      this.joined.delete(key)
      if (this.joinFailed.size >= MAX_JOIN_FAILURES) this.joinFailed.delete(this.joinFailed.keys().next().value as string)
      this.joinFailed.set(key, Date.now())
      this.log.error('could not install announced snapshot %c, syncing the DAG instead - %e', snapshot, err)
    }
  }

  /**
   * Whether this replica lacks history an announced snapshot may hold: it
   * has no heads (fresh), is dirty (a walk failed), or has a branch given
   * up for lack of its blocks (they may be compacted away on every peer:
   * then only a snapshot covering the branch brings its writes, and until
   * one is installed this replica cannot make a snapshot itself)
   */
  private async needsSnapshot (options: AbortOptions): Promise<boolean> {
    if (this.engine.heads.all().length === 0 || await this.engine.isDirty(options)) return true
    return (await this.engine.givenUp(options)).some(b => !b.reason.startsWith(MALFORMED_REASON))
  }

  /** Runs the compaction policy (`init.compaction`) every `interval` ms */
  private scheduleCompaction (): void {
    const interval = this.compactionInit?.interval ?? 0
    if (interval <= 0 || this.state !== 'started') return
    this.compactionTimer = setTimeout(() => {
      this.compactionTimer = undefined
      if (this.state !== 'started') return
      this.track((async () => {
        const history = await this.compaction.history()
        this.historyNodes = history.nodes
        if (history.nodes >= (this.compactionInit?.minNodes ?? 0)) {
          const result = await this.compaction.compact()
          if (result.waiting != null) this.log('compaction on interval waits: %s', result.waiting)
        }
      })()).catch((err: any) => {
        this.log('compaction on interval failed - %e', err)
      }).finally(() => { this.scheduleCompaction() })
    }, interval)
  }

  /**
   * Whether an announced node that is not processed here lies below the
   * covered heads of an installed snapshot (merged already): see
   * src/snapshot/cover.ts. Answers false at once on a replica that never
   * installed a snapshot.
   */
  private async isCovered (node: DecodedNode, options?: AbortOptions): Promise<boolean> {
    const components = this.snapshotComponents()
    if (this.hasCovered == null) this.hasCovered = (await coveredHeads(components, options)).length > 0
    if (!this.hasCovered) return false
    const id = blockKey(node.cid)
    const walk = await coverWalk(components, node.delta.dagName, new Map([[id, node.delta.priority]]), options)
    if (walk.reached.has(id)) return true
    if (walk.notBelow.has(id)) return false
    // no walk reaches it (the blocks between are gone): the snapshots passed or compacted here may name it
    return this.compaction.settleNamed(node, options)
  }

  private snapshotComponents (): SnapshotComponents {
    return { engine: this.engine, datastore: this.datastore, blockstore: this.fetcher, log: this.log }
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
    await this.replicator.receive(data)
  }

  // --- events --------------------------------------------------------------

  addEventListener<K extends keyof CRDTDatastoreEvents>(type: K, listener: CRDTDatastoreEventListener<K>, options?: boolean | AddEventListenerOptions): void {
    this.events.addEventListener(type, listener, options)
  }

  removeEventListener<K extends keyof CRDTDatastoreEvents>(type: K, listener?: CRDTDatastoreEventListener<K>, options?: boolean | EventListenerOptions): void {
    this.events.removeEventListener(type, listener, options)
  }

  listenerCount (type: keyof CRDTDatastoreEvents): number {
    return this.events.listenerCount(type)
  }

  // --- internals -----------------------------------------------------------

  private keyString (key: Key): string {
    // a Key from this module copy, or from another copy of interface-datastore
    if (!(key instanceof Key) && typeof (key as any)?.uint8Array !== 'function') {
      throw new InvalidKeyError(`Expected an interface-datastore Key, got ${key === null ? 'null' : typeof key}`)
    }
    return cleanKey(key.toString())
  }

  /**
   * Reads come from the local state, so they are served whether the store
   * runs or not (Helia reads its datastore before starting it), as long as
   * the underlying datastore is open
   */
  private checkReadable (options?: AbortOptions): void {
    options?.signal?.throwIfAborted()
  }

  private checkOpen (options?: AbortOptions): void {
    if (this.state !== 'started') {
      throw new DatastoreStoppedError(this.state === 'new'
        ? 'The CRDT datastore has not been started: call start() (createCRDTDatastore() and createHeliaCRDT() do) before writing to it or handing it to Helia or libp2p'
        : 'The CRDT datastore has been stopped: start() it again to use it')
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

  private async writeOps (ops: Map<string, KeyOp>, dagName: string, options?: Omit<WriteOptions, 'dagName'>): Promise<void> {
    // before anything is built: a read-only replica changes nothing
    this.gate.checkWriter()
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
      this.metrics.written()
      const written = { cid: commit.head.cid, height: commit.head.height, dagName: commit.head.dagName }
      if (options?.onProgress != null) report(options.onProgress, new CustomProgressEvent('crdt:write:node', written))
      await this.replicator.announce(commit.head, commit.replaced)
      if (options?.onProgress != null) report(options.onProgress, new CustomProgressEvent('crdt:write:announce', written))
      // a write split into several nodes failed part way: the parts that landed are announced
      if (commit.failure != null) throw commit.failure
    }
  }

  private emitChanges (changes: SetChange[], node?: ProcessedEventDetail): void {
    if (node != null) this.historyNodes++
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
