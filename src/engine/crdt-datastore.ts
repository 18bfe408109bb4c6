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
import { MAX_DAG_NAME_BYTES } from '../codec/delta.js'
import { cleanKey, Layout, LAYOUT_VERSION } from '../crdt/layout.js'
import { migrateLayout } from '../crdt/migrate.js'
import { DatastoreStoppedError, InvalidKeyError, InvalidOptionsError } from '../errors.js'
import { createSnapshot } from '../snapshot/create.js'
import { installSnapshot } from '../snapshot/install.js'
import { CRDTBatch, DeltaBuilder } from './batch.js'
import { dotDAG, printDAG } from './debug.js'
import { Engine } from './engine.js'
import { purgeDAG } from './purge.js'
import { Replicator } from './replicator.js'
import { Walker } from './walker.js'
import type { BatchOptions, KeyOp } from './batch.js'
import type { DAGViewOptions } from './debug.js'
import type { DAGBlockstore } from './engine.js'
import type { Broadcaster } from './replicator.js'
import type { DeltaElement } from '../codec/delta.js'
import type { Head } from '../crdt/heads.js'
import type { SetChange } from '../crdt/or-set.js'
import type { CreateSnapshotOptions } from '../snapshot/create.js'
import type { InstallResult, InstallSnapshotOptions } from '../snapshot/install.js'
import type { ComponentLogger, Logger } from '@libp2p/interface'
import type { Datastore, KeyQuery, Pair, Query } from 'interface-datastore'
import type { AbortOptions, AwaitGenerator, AwaitIterable } from 'interface-store'
import type { TypedEventTarget } from 'main-event'
import type { CID } from 'multiformats/cid'

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
   * How many DAG blocks are fetched and merged at once while syncing, shared
   * fairly by every walk. Announced heads are handled up to four times as
   * many at once, fairly between the peers that announced them
   *
   * @default 5
   */
  numWorkers?: number
  /**
   * How long (ms) to wait for the block of an announced head (asking the
   * announcer first) before giving the head up until it is announced again.
   * Shorter than `dagSyncerTimeout`, so a head nobody has costs little
   *
   * @default 10_000
   */
  headTimeout?: number
  /**
   * Fetched blocks larger than this (bytes) are refused and removed. Keep it
   * above the `maxBatchDeltaSize` of every writer
   *
   * @default 2_097_152
   */
  maxBlockSize?: number
  /**
   * Failed fetches after which an unfinished branch is given up: recorded,
   * counted in `stats().givenUpBranches`, no longer keeping the store dirty.
   * A node linking it later, or a broadcast of it, revives it
   *
   * @default 5
   */
  maxFetchAttempts?: number
  /**
   * Announced heads kept waiting for their turn, in all; the oldest of the
   * announcer with most waiting are dropped first (they come back with the
   * writer's next rebroadcast)
   *
   * @default 4096
   */
  maxQueuedHeads?: number
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
   * Walk several heads announced by one peer at once instead of one after
   * the other (heads of different peers are always walked side by side,
   * within the bounds above)
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
  /**
   * Carry the blocks of announced heads in broadcasts while they add up to
   * at most this many bytes (larger heads are announced alone and fetched);
   * 0 carries none. go-ds-crdt replicas ignore the carried blocks
   *
   * @default 262_144
   */
  broadcastBlocksMaxSize?: number
}

export const DEFAULT_NAMESPACE = '/crdt'
export const DEFAULT_REBROADCAST_INTERVAL = 60_000
export const DEFAULT_NUM_WORKERS = 5
export const DEFAULT_DAG_SYNCER_TIMEOUT = 300_000
export const DEFAULT_MAX_BATCH_DELTA_SIZE = 1_048_576
export const DEFAULT_REPAIR_INTERVAL = 3_600_000
export const DEFAULT_MULTI_HEAD_PROCESSING = false
export const DEFAULT_BROADCAST_BATCH_DELAY = 0
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
  /** DAG fetches waiting or in flight, merges waiting for the lock, and announced heads waiting or being handled */
  queuedJobs: number
  /**
   * Blocks received in full from the DAG syncer since start: by walks, for
   * announced heads and for heads fetched ahead of their turn, whether they
   * then decoded or not. Local blocks the DAG syncer serves count too
   */
  fetchedBlocks: number
  /** Announced heads waiting for their turn */
  queuedHeads: number
  /** Announced heads being fetched or walked */
  headsInFlight: number
  /** Announced heads dropped from full queues since start (they come back when rebroadcast) */
  droppedHeads: number
  /** Announcers deprioritised because their heads keep failing */
  penalisedAnnouncers: number
  /** Walks under way */
  walks: number
  /** Unfinished branches given up since start (malformed, or no block after `maxFetchAttempts` fetches) */
  givenUpBranches: number
  /** Broadcast payloads received from other replicas since start */
  receivedBroadcasts: number
}

const EMPTY = new Uint8Array(0)

/** `get` of `getter` calling `onBlock` after each block is received in full */
function countedGet (getter: Pick<DAGBlockstore, 'get'>, onBlock: () => void): DAGBlockstore['get'] {
  return async function * (cid: CID, options?: AbortOptions): AsyncGenerator<Uint8Array> {
    yield * getter.get(cid, options)
    onBlock()
  }
}

/** The fetching side of `blockstore` (and of its sessions), counting every block received */
function countingBlockstore (blockstore: DAGBlockstore, onBlock: () => void): DAGBlockstore {
  const counted: DAGBlockstore = {
    get: countedGet(blockstore, onBlock),
    put: (cid, bytes, options) => blockstore.put(cid, bytes, options),
    has: (cid, options) => blockstore.has(cid, options)
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
      maxBlockSize,
      maxFetchAttempts,
      onChanges: (changes, node) => { this.emitChanges(changes, node) }
    })
    // every fetch (walks, heads, heads fetched ahead) goes through this wrapper, which counts blocks received
    const fetcher = countingBlockstore(this.blockstore, () => { this.fetchedBlocks++ })
    this.walker = new Walker({ engine: this.engine, blockstore: fetcher, log: this.log, numWorkers, dagSyncerTimeout })
    this.replicator = new Replicator({
      engine: this.engine,
      walker: this.walker,
      blockstore: fetcher,
      broadcaster: components.broadcaster,
      log: this.log,
      rebroadcastInterval,
      repairInterval,
      multiHeadProcessing,
      broadcastBatchDelay,
      headSlots: numWorkers * HEAD_SLOTS_PER_WORKER,
      headTimeout: dagSyncerTimeout > 0 ? Math.min(headTimeout, dagSyncerTimeout) : headTimeout,
      maxQueuedHeadsPerAnnouncer: Math.min(MAX_QUEUED_HEADS_PER_ANNOUNCER, maxQueuedHeads),
      maxQueuedHeads,
      penaltyThreshold: PENALTY_THRESHOLD,
      broadcastBlocksMaxSize: checkNumber('broadcastBlocksMaxSize', init.broadcastBlocksMaxSize ?? DEFAULT_BROADCAST_BLOCKS_MAX_SIZE, 0)
    })
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
    this.fetchedBlocks = 0
    this.state = 'started'
    await this.replicator.start()
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
  async synced (options?: AbortOptions): Promise<void> {
    this.checkOpen(options)
    await this.replicator.synced(options)
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
      receivedBroadcasts: this.replicator.received
    }
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
    await this.replicator.receive(data)
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
        ? 'The CRDT datastore has not been started: call start() (createCRDTDatastore() and createHeliaCRDT() do) before using it or handing it to Helia or libp2p'
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
