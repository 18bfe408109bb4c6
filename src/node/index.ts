/**
 * @packageDocumentation
 *
 * `datastore-crdt/node`: a ready-made Helia node for replicas on Node.js
 * (TCP or WebSockets on 127.0.0.1, LevelDB in a directory, gossipsub,
 * bitswap, no public discovery), as the CLI and the demo use it.
 *
 * @example
 *
 * ```ts
 * import { createReplicaNode } from 'datastore-crdt/node'
 * import { createHeliaCRDT } from 'datastore-crdt/helia'
 *
 * const node = await createReplicaNode({ directory: './replica-1' })
 * const store = await createHeliaCRDT(node, { topic: 'my-app' })
 * ```
 */

export { createReplicaNode, DEFAULT_LISTEN, DEFAULT_BITSWAP_DEBOUNCE, DEFAULT_BITSWAP_MESSAGE_RECEIVE_TIMEOUT, DEFAULT_ALLOW } from './node.js'
export type { ReplicaNode, ReplicaNodeInit, ReplicaNodeServices } from './node.js'
export { DEFAULT_INBOUND_CONNECTION_THRESHOLD, DEFAULT_MAX_INCOMING_PENDING_CONNECTIONS, DEFAULT_MAX_PUBSUB_MESSAGE_SIZE } from './node.js'
