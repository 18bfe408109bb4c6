/**
 * @packageDocumentation
 *
 * `datastore-crdt/helia`: the adapters that replicate a CRDT datastore over
 * a Helia node — heads over libp2p gossipsub (`pubsubBroadcaster`), blocks
 * through the node's blockstore (`heliaDAGSyncer`, bitswap) and the
 * block-sync protocol, all wired up by `createHeliaCRDT()`.
 *
 * @example
 *
 * ```ts
 * import { createHeliaCRDT } from 'datastore-crdt/helia'
 *
 * const store = await createHeliaCRDT(helia, { topic: 'my-app' })
 * await store.put(new Key('/hello'), new TextEncoder().encode('world'))
 * await store.stop() // the Helia node keeps running
 * ```
 */

export { pubsubBroadcaster, DEFAULT_MAX_QUEUED, DEFAULT_VALIDATE } from './pubsub-broadcaster.js'
export type { PubSub, PubSubMessage, PubSubBroadcaster, PubSubBroadcasterComponents, PubSubBroadcasterInit, ValidatorResult, TopicValidator, TopicValidators } from './pubsub-broadcaster.js'
export { createHeliaCRDT, DEFAULT_PUBSUB_SERVICE, DEFAULT_NAMESPACE_PREFIX } from './helia.js'
export { heliaDAGSyncer, DEFAULT_SESSIONS } from './dag-syncer.js'
export type { HeliaDAGSyncerComponents, HeliaDAGSyncerInit } from './dag-syncer.js'
export type { HeliaLike, HeliaCRDTInit, HeliaCRDTDatastore } from './helia.js'
export { askMerged, MERGED_PROTOCOL } from './merged-protocol.js'
export { DEFAULT_TOPIC_CHECK_INTERVAL } from './topic-watch.js'
export { DEFAULT_SYNC_PROTOCOL } from './helia.js'
export { syncServer } from './sync/server.js'
export type { SyncServer, SyncServerComponents, SyncServerInit, SyncServerLibp2p, SyncServerBlockstore } from './sync/server.js'
export { syncingBlockstore, DEFAULT_BAD_PEER_TIMEOUT } from './sync/syncing-blockstore.js'
export type { SyncingBlockstore, SyncingBlockstoreComponents, SyncingBlockstoreInit, SyncingBlockstoreLibp2p, SyncStats } from './sync/syncing-blockstore.js'
export type { HeliaSync, SyncInit } from './sync/helia-sync.js'
export { SYNC_PROTOCOL, DEFAULT_MAX_BLOCKS, DEFAULT_MAX_BYTES, DEFAULT_MAX_BLOCK_SIZE as DEFAULT_SYNC_MAX_BLOCK_SIZE, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_STREAMS_PER_PEER } from './sync/protocol.js'
