/**
 * The public interfaces of the package: what a CRDT datastore is made from
 * (its components and options), what it offers (`CRDTDatastore`) and the
 * events it emits. Implementations import their types from here and nothing
 * here imports an implementation at run time (type imports only), so the
 * entry point can re-export it without import cycles.
 */

import type { DecodedNode } from './codec/dag-node.js'
import type { Head } from './crdt/heads.js'
import type { CRDTBatch, BatchOptions } from './engine/batch.js'
import type { DAGViewOptions } from './engine/debug.js'
import type { ReceivedPayload } from './engine/payload-queue.js'
import type { CompactionInit, CompactResult, HistoryStats } from './snapshot/compaction.js'
import type { CreateSnapshotOptions } from './snapshot/create.js'
import type { InstallResult, InstallSnapshotOptions } from './snapshot/install.js'
import type { WriterId } from './trust/writers.js'
import type { ComponentLogger, Metrics, PrivateKey, Startable } from '@libp2p/interface'
import type { Datastore, Key, Pair } from 'interface-datastore'
import type { AbortOptions, AwaitIterable } from 'interface-store'
import type { EventHandler } from 'main-event'
import type { CID } from 'multiformats/cid'
import type { ProgressEvent, ProgressOptions } from 'progress-events'

/** The part of a blockstore the engine needs: Helia's blockstore fits */
export interface DAGBlockstore {
  get(cid: CID, options?: AbortOptions): AsyncIterable<Uint8Array> | Iterable<Uint8Array>
  put(cid: CID, bytes: Uint8Array, options?: AbortOptions): unknown
  has(cid: CID, options?: AbortOptions): boolean | Promise<boolean>
  /**
   * Stores several blocks, yielding each CID once it is stored, as
   * interface-blockstore's `putMany` does. Optional: without it the store
   * `put`s blocks one by one; with it, the head blocks of broadcasts that
   * arrived together are stored in one call (a blockstore that writes them
   * at once saves a write per block).
   */
  putMany?(source: Iterable<{ cid: CID, bytes: Uint8Array }>, options?: AbortOptions): AsyncIterable<CID> | Iterable<CID>
  /** Present on Helia's blockstore: a getter that asks the same peers for related blocks */
  createSession?(root: CID, options?: AbortOptions): { get(cid: CID, options?: AbortOptions): AsyncIterable<Uint8Array> | Iterable<Uint8Array> }
  /**
   * Called when a block fetched for `cid` was refused (too large, not the
   * node it claims to be): a DAG syncer that stored it on the way (Helia's
   * blockstore persists what it fetches) removes it here
   */
  discard?(cid: CID, options?: AbortOptions): unknown
  /**
   * Deletes a block stored locally: compaction (`compact()`) removes the
   * blocks its snapshot covers through it, and keeps them without it
   */
  delete?(cid: CID, options?: AbortOptions): unknown
  /**
   * The block when it is at hand without the network (stored locally, or
   * just delivered by a sync stream, possibly decoded already); undefined
   * otherwise. Without it the engine asks `has()` then `get()`.
   */
  getLocal?(cid: CID, options?: AbortOptions): Promise<LocalBlock | undefined>
}

/** A block at hand locally; `node` when the one who had it decoded it already (checked against its CID) */
export interface LocalBlock {
  bytes: Uint8Array
  node?: DecodedNode
}

/**
 * Announces heads to other replicas and hands over what they announce.
 * `pubsubBroadcaster()` implements it over libp2p gossipsub.
 */
export interface Broadcaster {
  /** Sends a payload to every other replica */
  broadcast(data: Uint8Array, options?: AbortOptions): Promise<void>
  /** Resolves with the next payload from another replica; rejects when aborted */
  next(options?: AbortOptions): Promise<Uint8Array>
  /**
   * Like `next()`, with the announcing peer and the decoded heads when the
   * transport knows them; used instead of `next()` when present
   */
  nextPayload?(options?: AbortOptions): Promise<ReceivedPayload>
  /**
   * Calls `listener` with the peer id of every replica that joins the topic
   * (subscribes, as it does on each new connection: a restart, a healed
   * partition); returns a function that stops the calls. The store tries
   * branches it gave up again when a replica joins, since the newcomer may
   * hold them. Absent: given-up branches are retried only when an announcer
   * reappears after a silence, and now and then.
   */
  watchJoins?(listener: (peer: string) => void): () => void
}

/** The collaborators a CRDT datastore is built from */
export interface CRDTDatastoreComponents {
  /** Where all CRDT state lives, under `init.namespace` */
  datastore: Datastore
  /** The DAG syncer: stores local blocks and fetches remote ones (Helia's blockstore fetches over bitswap) */
  blockstore: DAGBlockstore
  /** Announces and receives heads; absent = an offline replica */
  broadcaster?: Broadcaster
  /** Logger factory; defaults to `@libp2p/logger`'s. Each part logs under its own name (`datastore-crdt:engine`, `:walker`, `:replicator`, …) */
  logger?: ComponentLogger
  /**
   * Where to register the store's metrics (libp2p's `Metrics`, e.g.
   * `libp2p.metrics`): nodes merged, blocks fetched, bytes, heads, sync lag.
   * `createHeliaCRDT()` passes the Helia node's libp2p metrics when it has them
   */
  metrics?: Metrics
  /**
   * This replica's Ed25519 libp2p key. In trusted mode (`init.writers`) it
   * signs what this replica broadcasts; without it, or when its peer ID is
   * not a writer, the replica is read-only
   */
  privateKey?: PrivateKey
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
   * While syncing, a fetched node and the nodes below it whose blocks are
   * already local (a sync stream brought them) are merged in one datastore
   * batch of at most this many nodes (more per batch saves little CPU past
   * a few dozen, and every node of a batch is held until it commits)
   *
   * @default 64
   */
  maxMergeNodes?: number
  /**
   * Block bytes merged in one datastore batch at most (see `maxMergeNodes`)
   *
   * @default 4_194_304
   */
  maxMergeBytes?: number
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
   * Announce local writes at most once per this many ms: a write after a
   * quiet spell is announced at once, and the writes that follow within the
   * interval are announced together when it ends, as their newest heads
   * carrying the blocks of the nodes they superseded (within
   * `broadcastBlocksMaxSize`), so receivers verify one message per burst
   * and fetch nothing. 0 announces every write at once (go-ds-crdt's way);
   * `broadcastBatchDelay`, when set, takes precedence
   *
   * @default 5
   */
  announceInterval?: number
  /**
   * Carry the blocks of announced heads in broadcasts (and, for heads
   * gathered by `announceInterval` or `broadcastBatchDelay`, the blocks of
   * the nodes they superseded) while they add up to at most this many bytes
   * (larger heads are announced alone and fetched); 0 carries none.
   * go-ds-crdt replicas ignore the carried blocks
   *
   * @default 262_144
   */
  broadcastBlocksMaxSize?: number
  /**
   * Trusted mode: the replicas allowed to write, as Ed25519 peer IDs
   * (`12D3KooW…`), `PeerId`s or `PublicKey`s. Only heads signed by one of
   * them are accepted; other replicas are read-only. A list stored by
   * `setWriters()` wins over this one. Absent (and none stored) is open
   * mode, go-ds-crdt-compatible
   *
   * @default undefined
   */
  writers?: WriterId[]
  /**
   * The name trusted-mode signatures are bound to, so a signed broadcast
   * cannot be replayed on another topic. Every replica of a store must use
   * the same
   *
   * @default the broadcaster's `topic` when it has one, else ''
   */
  topic?: string
  /**
   * Bounded history (issue #16): when given, this replica announces the
   * snapshots it has passed (so others may compact) and compacts every
   * `interval` ms when it keeps at least `minNodes` nodes. Off by default;
   * `compact()` can be called either way. See README, "Bounded history"
   */
  compaction?: CompactionInit
}

/** Options of write methods */
export interface WriteOptions extends AbortOptions, ProgressOptions<WriteProgressEvents> {
  /** Write to this named DAG instead of the default one */
  dagName?: string
}

/**
 * Progress events of the DAG syncer the store fetches and stores blocks
 * through, passed on untouched: the store forwards `onProgress` into the
 * blockstore's `get` and `put`, so Helia's (`blocks:…`, `helia:…`) and
 * bitswap's (`bitswap:…`) own events reach the caller
 */
export type DAGSyncerProgressEvents = ProgressEvent<`blocks:${string}` | `bitswap:${string}` | `helia:${string}`, unknown>

/** Detail of a `crdt:write:node` or `crdt:write:announce` progress event */
export interface WriteNodeDetail {
  /** The DAG node written (the last one, when a write was split into several) */
  cid: CID
  height: number
  dagName: string
}

/**
 * Progress of a write (`put`, `delete`, `putMany`, `deleteMany`, a batch's
 * `commit`): its node committed locally, then announced to other replicas
 * (or gathered for the next announcement, see `announceInterval`)
 */
export type WriteProgressEvents =
  ProgressEvent<'crdt:write:node', WriteNodeDetail> |
  ProgressEvent<'crdt:write:announce', WriteNodeDetail> |
  DAGSyncerProgressEvents

/** Detail of a `crdt:merge:node` progress event */
export interface MergeNodeDetail {
  /** The remote DAG node merged */
  cid: CID
  priority: number
  dagName: string
  /** Size of its block */
  bytes: number
}

/**
 * Detail of the store's `sync:progress` event and of `crdt:sync:progress`
 * progress events: where a sync stands
 */
export interface SyncProgressDetail {
  /** Remote DAG nodes merged since the store started */
  nodesMerged: number
  /** Bytes of those nodes' blocks */
  bytesMerged: number
  /**
   * The known frontier left: DAG nodes waiting to be fetched or being
   * fetched and merged, plus announced heads waiting or being handled.
   * 0 once everything known so far is merged (or given up)
   */
  frontier: number
  /** Greatest height among the heads */
  maxHeight: number
}

/**
 * Progress of a sync or a repair: each remote node merged, and where the
 * sync stands after each step, with the DAG syncer's own events
 */
export type SyncProgressEvents =
  ProgressEvent<'crdt:merge:node', MergeNodeDetail> |
  ProgressEvent<'crdt:sync:progress', SyncProgressDetail> |
  DAGSyncerProgressEvents

/** Options of `synced()` and `repair()` */
export interface SyncOptions extends AbortOptions, ProgressOptions<SyncProgressEvents> {}

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
  /**
   * Where a sync stands: sent after each remote node is merged (or fails)
   * and after each announced head's turn, until `frontier` reaches 0
   */
  'sync:progress': CustomEvent<SyncProgressDetail>
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
   * then decoded or not. Local blocks the DAG syncer serves count too; a
   * head block carried in its broadcast does not (it is not fetched)
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
  /** Trusted mode: the current writers' peer IDs; absent in open mode */
  writers?: string[]
  /** False when trusted mode makes this replica read-only */
  canWrite: boolean
  /** Trusted mode: broadcasts refused since start (unsigned, not from a writer, or a bad signature) */
  rejectedBroadcasts: number
  /**
   * History kept (issue #16): `nodes` is the count of the last scan
   * (`compact()` or `historyStats()`) plus the nodes merged since;
   * `blocksBytes` is the last scan's
   */
  history: HistoryStats
}

/** A listener of one of the store's events */
export type CRDTDatastoreEventListener<K extends keyof CRDTDatastoreEvents> = EventHandler<CRDTDatastoreEvents[K]> | null

/**
 * A Merkle-CRDT replicated `Datastore`, as returned by
 * `createCRDTDatastore()` (and `createHeliaCRDT()`). Writes become DAG
 * nodes announced to every replica; reads come from the local state.
 *
 * Its events can be listened to but not dispatched: only the store emits
 * them. `stop()` leaves the store restartable with `start()`.
 */
export interface CRDTDatastore extends Datastore, Startable {
  /**
   * Loads the heads, detects an unclean previous shutdown (the store is then
   * marked dirty and repaired) and starts replicating. Does nothing on a
   * started store; a stopped store can be started again.
   */
  start(options?: AbortOptions): Promise<void>
  /**
   * Stops replicating and waits for every background task and pending
   * write. The underlying datastore and blockstore stay open.
   */
  stop(options?: AbortOptions): Promise<void>

  put(key: Key, value: Uint8Array, options?: WriteOptions): Promise<Key>
  /** Reads the local state; served also while the store is not running */
  get(key: Key, options?: AbortOptions): Promise<Uint8Array>
  has(key: Key, options?: AbortOptions): Promise<boolean>
  getMany(source: AwaitIterable<Key>, options?: AbortOptions): AsyncGenerator<Pair>
  delete(key: Key, options?: WriteOptions): Promise<void>
  putMany(source: AwaitIterable<Pair>, options?: WriteOptions): AsyncGenerator<Key>
  deleteMany(source: AwaitIterable<Key>, options?: WriteOptions): AsyncGenerator<Key>
  /** A batch whose writes become one DAG node (or several past `maxBatchDeltaSize`) on `commit()` */
  batch(options?: BatchOptions): CRDTBatch

  /**
   * Resolves once everything other replicas announced before the call has
   * been merged (or given up, leaving the store dirty). While it waits,
   * `onProgress` hears every remote node merged (`crdt:merge:node`), where
   * the sync stands (`crdt:sync:progress`) and the DAG syncer's own events
   */
  synced(options?: SyncOptions): Promise<void>
  /** Counters for monitoring */
  stats(): CRDTStats
  /** The current heads, of every DAG or of one */
  heads(dagName?: string): Head[]
  /** Whether the DAG node `cid` has been merged into this store */
  hasMerged(cid: CID, options?: AbortOptions): Promise<boolean>
  /** DAG nodes recorded as the frontier of a walk that has not finished */
  pendingBranches(options?: AbortOptions): Promise<CID[]>
  /**
   * DAG nodes whose branch was given up (malformed, or no block after
   * `maxFetchAttempts` fetches), with the reason and, when the DAG syncer
   * named them, the peers asked last that did not have the block; they are
   * tried again now and then, whenever an announcer is heard from again, and
   * when a replica that was not among those peers joins the topic
   */
  givenUpBranches(options?: AbortOptions): Promise<Array<{ cid: CID, reason: string, refusedBy?: string[] }>>
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
  setWriters(writers: WriterId[] | null, options?: AbortOptions): Promise<void>
  /** This replica's peer ID as a writer (from `components.privateKey`), when it has a key */
  writerId(): string | undefined
  /**
   * Whether a payload passes this store's trusted-mode rules (always in open
   * mode): signed for this store's topic by a current writer. Transports
   * use it to drop foreign payloads before relaying them
   */
  admitsBroadcast(data: Uint8Array, options?: AbortOptions): Promise<boolean>
  /**
   * Whether this replica holds every node below its heads: no walk under
   * way or waiting and no unfinished branch recorded (a walk's head is a
   * head before the nodes below it are merged). The Helia adapter's sync
   * requests say so, so a server leaves out what lies below them.
   *
   * @example
   * ```ts
   * if (await store.holdsAllBelowHeads()) {
   *   console.log('nothing of ours is still being walked')
   * }
   * ```
   */
  holdsAllBelowHeads(options?: AbortOptions): Promise<boolean>
  /** True when a sync failed or the last run did not stop cleanly, until a repair succeeds */
  isDirty(options?: AbortOptions): Promise<boolean>
  /** Marks the store dirty so the repair loop runs */
  markDirty(options?: AbortOptions): Promise<void>
  /**
   * Resumes every unfinished walk; marks the store clean when none is left.
   * `onProgress` hears the repair's merges, progress and block fetches
   */
  repair(options?: SyncOptions): Promise<void>
  /** Removes a named DAG; resolves to the number of DAG nodes removed */
  purgeDAG(dagName: string, options?: AbortOptions): Promise<number>
  /** Writes a snapshot of the current state and resolves to its root CID */
  snapshot(options?: CreateSnapshotOptions): Promise<CID>
  /**
   * Fetches, verifies and merges the snapshot `cid`. In trusted mode only a
   * snapshot a current writer announced (signed) or this replica made is
   * installed; any other rejects with `UntrustedSnapshotError`
   */
  installSnapshot(cid: CID, options?: InstallSnapshotOptions): Promise<InstallResult>
  /**
   * Makes a snapshot of the current heads and, once every known replica has
   * passed it (announced it in its broadcasts), deletes the blocks of the
   * DAG nodes it covers and the set entries it no longer needs. Resolves
   * with nothing removed and `waiting` set while a known replica has not
   * passed it or announces no snapshot support (go-ds-crdt). Atomic across
   * crashes. See README, "Bounded history"
   */
  compact(options?: AbortOptions): Promise<CompactResult>
  /** Scans the history kept (merged nodes whose blocks are here, and their bytes); updates `stats().history` */
  historyStats(options?: AbortOptions): Promise<HistoryStats>
  /** An indented listing of the DAG from local blocks, for debugging small DAGs */
  printDAG(options?: DAGViewOptions): Promise<string>
  /** The DAG as a Graphviz digraph, from local blocks */
  dotDAG(options?: DAGViewOptions): Promise<string>
  /** Hands a broadcast payload to the store as if it came from the Broadcaster */
  receive(data: Uint8Array, options?: AbortOptions): Promise<void>

  /** Listens to one of the store's events */
  addEventListener<K extends keyof CRDTDatastoreEvents>(type: K, listener: CRDTDatastoreEventListener<K>, options?: boolean | AddEventListenerOptions): void
  /** Stops listening */
  removeEventListener<K extends keyof CRDTDatastoreEvents>(type: K, listener?: CRDTDatastoreEventListener<K>, options?: boolean | EventListenerOptions): void
  /** How many listeners an event has */
  listenerCount(type: keyof CRDTDatastoreEvents): number
}
