/**
 * What a browser app imports from the core: the store, the OR-set codecs
 * and the errors (src/index.ts minus the Helia, pubsub and Node adapters,
 * which it still re-exports until the entry points are split). Bundled by
 * index.mjs; built from dist/.
 */

export { CRDTDatastore } from '../../dist/src/crdt-datastore.js'
export { encodeDelta, decodeDelta } from '../../dist/src/delta.js'
export { encodeNode, decodeNode } from '../../dist/src/dag-node.js'
export { encodeBroadcast, decodeBroadcast } from '../../dist/src/broadcast.js'
export { blockKey, cidFromBlockKey } from '../../dist/src/block-key.js'
export * from '../../dist/src/errors.js'
