/**
 * Messages between the chaos harness (run.ts / harness.ts) and its replica
 * processes (replica.ts), over the child-process IPC channel.
 */

import type { CRDTDatastoreInit } from '../../src/index.js'
import type { BroadcastFaults, FaultCounts } from '../fixtures/faulty-broadcaster.js'

/** Where each replica keeps its CRDT state inside its Helia datastore */
export const CHAOS_NAMESPACE = '/crdt'

/** argv[2] of a replica process, as JSON */
export interface ReplicaConfig {
  index: number
  dir: string
  topic: string
  seed: number
  faults: Partial<BroadcastFaults>
  store: CRDTDatastoreInit
  /** Peer ids this replica must not be connected to */
  blocked: string[]
  /** Serves and syncs through the block-sync protocol (else bitswap only, as a go-ds-crdt replica) */
  syncProtocol: boolean
  /** Trusted mode: the writers' peer ids (the honest replicas); absent = open mode */
  writers?: string[]
  /**
   * A rogue replica of a trusted run: not a writer, yet it counts itself
   * one, so it writes and signs with its own key, and on `rogue` requests
   * forges and replays broadcasts
   */
  rogue?: boolean
}

export type JunkKind = 'garbage-payload' | 'missing-head' | 'raw-head' | 'random-block' | 'bad-delta' | 'huge-priority' | 'valid-over-junk' | 'head-flood' | 'missing-links'

export interface BatchOp {
  key: string
  /** absent: a delete */
  value?: string
}

export type ReplicaRequest = { id: number } & (
  | { cmd: 'put', key: string, value: string }
  | { cmd: 'delete', key: string }
  /** `armParts`: send an `armed` event once that many of its DAG nodes are committed */
  | { cmd: 'batch', ops: BatchOp[], armParts?: number }
  /** send an `armed` event once this many more remote nodes are merged */
  | { cmd: 'arm', remote: number }
  | { cmd: 'status' }
  | { cmd: 'state' }
  | { cmd: 'dial', addrs: string[] }
  | { cmd: 'block', peers: string[] }
  | { cmd: 'faults', faults: Partial<BroadcastFaults> }
  | { cmd: 'junk', kind: JunkKind, tag: string }
  /** when each value was first seen in a `put` event of this incarnation (ms since the epoch) */
  | { cmd: 'arrivals' }
  /** which of `cids` this replica has merged */
  | { cmd: 'merged', cids: string[] }
  /**
   * Rogue replica only: writes a key of its own and one honest-looking key,
   * publishes a broadcast of its head signed by itself but naming `writer`'s
   * key, and replays an old broadcast of the honest replicas; returns the
   * keys and values it wrote
   */
  | { cmd: 'rogue', tag: string, writer: string }
  | { cmd: 'compact' }
  | { cmd: 'stop' }
)

export interface ReplicaReply {
  id: number
  ok: boolean
  result?: any
  error?: { name: string, message: string }
}

export type ReplicaEvent =
  | { event: 'ready', peerId: string, addrs: string[] }
  | { event: 'armed', id?: number }

export interface ReplicaStatus {
  keys: number
  /** Hash of the sorted key=value lines */
  hash: string
  heads: string[]
  dirty: boolean
  pending: number
  /** The first few pending branches */
  pendingCids: string[]
  connections: number
  /** Peer ids of the open connections */
  peers: string[]
  /** Peer ids gossipsub knows to be subscribed to the topic */
  subscribers: string[]
  /** DAG fetches and merges waiting or in flight */
  queued: number
  /** Blocks fetched from other replicas, and how long each took */
  fetches: { count: number, avgMs: number, maxMs: number }
  /** Event-loop delay: how starved of CPU the replica is */
  loopDelayMs: { p50: number, p99: number }
  processedLocal: number
  processedRemote: number
  faults: FaultCounts
  /** Branches given up (the first hundred), and how many there are */
  givenUp: string[]
  givenUpCount: number
  /** When this incarnation started (ms since the epoch) */
  startedAt: number
  /** Resident set size now and at most since this incarnation started, sampled every 250 ms */
  rssBytes: number
  peakRssBytes: number
  /** Bytes of the LevelDB blockstore's files on disk */
  blockstoreBytes: number
  /** Blocks received through sync streams since this incarnation started */
  syncBlocks: number
  /** Broadcasts trusted mode refused since this incarnation started (`stats().rejectedBroadcasts`) */
  rejectedBroadcasts: number
  /**
   * With compaction configured: the snapshot compacted here (if any), the
   * block deletions a compaction left listed (z/j), and the merged nodes
   * whose blocks are no longer here (removed by compaction, or covered by
   * an installed snapshot)
   */
  history?: { compacted?: string, jobs: number, gone: number }
}
