/**
 * @packageDocumentation
 *
 * A replicated key-value store for the JS IPFS stack: an interface-datastore
 * `Datastore` whose every write reaches every replica, built on Merkle-CRDTs
 * and wire-compatible with Go's [go-ds-crdt](https://github.com/ipfs/go-ds-crdt).
 *
 * Writes become deltas of an add-wins observed-remove set. Each delta is a
 * dag-pb node linking the heads its writer had seen; replicas announce their
 * heads through a {@link Broadcaster} and fetch the nodes they miss through a
 * blockstore (Helia's fetches over bitswap). A key's value is the one written
 * at the greatest DAG height, ties going to the byte-wise greatest value.
 *
 * @example An offline replica in memory
 *
 * ```ts
 * import { createCRDTDatastore } from 'datastore-crdt'
 * import { MemoryDatastore } from 'datastore-core'
 * import { MemoryBlockstore } from 'blockstore-core'
 * import { Key } from 'interface-datastore'
 *
 * const store = await createCRDTDatastore({
 *   datastore: new MemoryDatastore(),
 *   blockstore: new MemoryBlockstore()
 * })
 *
 * await store.put(new Key('/hello'), new TextEncoder().encode('world'))
 * console.log(new TextDecoder().decode(await store.get(new Key('/hello')))) // world
 *
 * const batch = store.batch()
 * batch.put(new Key('/a'), Uint8Array.of(1))
 * batch.delete(new Key('/hello'))
 * await batch.commit() // one DAG node, one broadcast
 *
 * await store.stop()
 * ```
 *
 * @example Replicas that reach each other through any transport
 *
 * ```ts
 * import { createCRDTDatastore, type Broadcaster } from 'datastore-crdt'
 *
 * // anything with broadcast() and next() will do; pubsubBroadcaster()
 * // gives one over libp2p gossipsub, createHeliaCRDT() wires it all up
 * const broadcaster: Broadcaster = myBroadcaster
 * const store = await createCRDTDatastore({ datastore, blockstore, broadcaster }, {
 *   namespace: '/my-app',
 *   rebroadcastInterval: 10_000
 * })
 *
 * store.addEventListener('put', (evt) => {
 *   console.log('now', evt.detail.key.toString())
 * })
 *
 * // where a sync stands: remote nodes and bytes merged, known frontier left
 * store.addEventListener('sync:progress', (evt) => {
 *   console.log(evt.detail.nodesMerged, 'merged,', evt.detail.frontier, 'left')
 * })
 *
 * // resolves once everything announced so far by other replicas is merged;
 * // onProgress also hears each node merged and the DAG syncer's own events
 * await store.synced({
 *   signal: AbortSignal.timeout(30_000),
 *   onProgress: (evt) => { if (evt.type === 'crdt:merge:node') console.log('merged', evt.detail.cid.toString()) }
 * })
 * ```
 */

// first: fails fast, with a clear message, on a Node.js too old for libp2p and Helia
import './node-check.js'
import { DefaultCRDTDatastore } from './engine/crdt-datastore.js'
import type { CRDTDatastore, CRDTDatastoreComponents, CRDTDatastoreInit } from './interfaces.js'
import type { AbortOptions } from 'interface-store'

export type * from './interfaces.js'
export {
  DEFAULT_NAMESPACE,
  DEFAULT_REBROADCAST_INTERVAL,
  DEFAULT_NUM_WORKERS,
  DEFAULT_DAG_SYNCER_TIMEOUT,
  DEFAULT_MAX_BATCH_DELTA_SIZE,
  DEFAULT_REPAIR_INTERVAL,
  DEFAULT_MULTI_HEAD_PROCESSING,
  DEFAULT_BROADCAST_BATCH_DELAY,
  DEFAULT_ANNOUNCE_INTERVAL,
  DEFAULT_BROADCAST_BLOCKS_MAX_SIZE
} from './engine/crdt-datastore.js'
export type { BatchOptions, CommitOptions, CRDTBatch } from './engine/batch.js'
export type { BroadcastGate } from './engine/replicator.js'
export type { WriterId } from './trust/writers.js'
export { parseWriter, parseWriters } from './trust/writers.js'
export { signBroadcast, verifyBroadcast, signedBytes, BROADCAST_SIGNATURE_DOMAIN } from './trust/signature.js'
export type { Head } from './crdt/heads.js'
export type { DAGViewOptions } from './engine/debug.js'
export type { LocalBlock } from './interfaces.js'
export { DEFAULT_MAX_MERGE_NODES, DEFAULT_MAX_MERGE_BYTES } from './engine/engine.js'
export type { Delta, DeltaElement } from './codec/delta.js'
export { encodeDelta, decodeDelta } from './codec/delta.js'
export { encodeNode, decodeNode } from './codec/dag-node.js'
export type { EncodedNode, DecodedNode } from './codec/dag-node.js'
export { encodeBroadcast, decodeBroadcast } from './codec/broadcast.js'
export type { BroadcastHead } from './codec/broadcast.js'
export { blockKey, cidFromBlockKey } from './codec/block-key.js'
export * from './errors.js'
export { MIN_NODE_MAJOR } from './node-version.js'
export { createSnapshot } from './snapshot/create.js'
export type { CreateSnapshotOptions, SnapshotComponents } from './snapshot/create.js'
export { installSnapshot, readSnapshot, DEFAULT_SNAPSHOT_BLOCK_TIMEOUT } from './snapshot/install.js'
export type { InstallResult, InstallSnapshotOptions } from './snapshot/install.js'
export { SNAPSHOT_VERSION, DEFAULT_CHUNK_BYTES, MAX_SNAPSHOT_BLOCK_BYTES } from './snapshot/format.js'
export type { SnapshotRoot, SnapshotHead, SnapshotElement, SnapshotTombstone, SnapshotNode } from './snapshot/format.js'
export { DEFAULT_COMPACTION_INTERVAL, DEFAULT_COMPACTION_MIN_NODES, DEFAULT_MAX_KNOWN_REPLICAS, DEFAULT_MEMBERSHIP_WINDOW } from './snapshot/compaction.js'
export type { CompactionInit, CompactResult, HistoryStats } from './snapshot/compaction.js'
export { addSnapshotAnnouncement, readSnapshotAnnouncement } from './codec/broadcast-snapshot.js'
export type { SnapshotAnnouncement } from './codec/broadcast-snapshot.js'

/**
 * Creates a CRDT datastore over the given components and starts it: it
 * loads its heads, resumes unfinished syncs, and (with a broadcaster)
 * starts replicating. Call `stop()` when done; the datastore and blockstore
 * are not closed by it.
 *
 * @example
 * ```ts
 * const store = await createCRDTDatastore({ datastore, blockstore, broadcaster }, { namespace: '/crdt' })
 * ```
 */
export async function createCRDTDatastore (components: CRDTDatastoreComponents, init: CRDTDatastoreInit = {}, options?: AbortOptions): Promise<CRDTDatastore> {
  const store = new DefaultCRDTDatastore(components, init)
  await store.start(options)
  return store
}

export { PayloadQueue } from './engine/payload-queue.js'
// limits of the receive path (see the README: "What a hostile peer can and cannot do")
export {
  DEFAULT_HEAD_TIMEOUT,
  DEFAULT_MAX_BLOCK_SIZE,
  DEFAULT_MAX_FETCH_ATTEMPTS,
  DEFAULT_MAX_QUEUED_HEADS,
  MAX_QUEUED_HEADS_PER_ANNOUNCER,
  PENALTY_THRESHOLD,
  HEAD_SLOTS_PER_WORKER
} from './engine/crdt-datastore.js'
export { splitBroadcast, MAX_BROADCAST_HEADS, MAX_BROADCAST_DAG_NAMES, MAX_BROADCAST_DAG_NAME_LENGTH, MAX_BROADCAST_SIZE } from './codec/broadcast.js'
export { DEFAULT_MAX_QUEUED_BYTES } from './engine/payload-queue.js'
export { GIVEN_UP_RETRY_EVERY } from './engine/replicator.js'
export type { ReceivedPayload } from './engine/payload-queue.js'
export { encodeBroadcastWithBlocks, decodeCarriedBlocks } from './codec/broadcast-blocks.js'
export type { CarriedBlock, CarriedBlocks } from './codec/broadcast-blocks.js'
