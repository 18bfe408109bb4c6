/**
 * What a browser app imports from the core: the store, the OR-set codecs
 * and the errors (src/index.ts minus the Helia, pubsub and Node adapters,
 * which it still re-exports until the entry points are split). Bundled by
 * index.mjs; built from dist/.
 */

export { DefaultCRDTDatastore } from '../../dist/src/engine/crdt-datastore.js'
export { encodeDelta, decodeDelta } from '../../dist/src/codec/delta.js'
export { encodeNode, decodeNode } from '../../dist/src/codec/dag-node.js'
export { encodeBroadcast, decodeBroadcast } from '../../dist/src/codec/broadcast.js'
export { blockKey, cidFromBlockKey } from '../../dist/src/codec/block-key.js'
export * from '../../dist/src/errors.js'
