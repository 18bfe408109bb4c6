/**
 * LevelDB stores in temp dirs, raw or under a CRDT datastore, for the
 * benchmarks of this package (run `npx tsc -p .` first: they import dist/).
 */

import { join } from 'node:path'
import { LevelDatastore } from 'datastore-level'
import { LevelBlockstore } from 'blockstore-level'
import { Key } from 'interface-datastore'
import { createCRDTDatastore } from '../../dist/src/index.js'
import { keyName, tempDir } from './common.mjs'

export { Key }

/** A raw datastore-level store in a temp dir */
export async function rawLevel (label) {
  const tmp = await tempDir(label)
  const datastore = new LevelDatastore(join(tmp.dir, 'datastore'))
  await datastore.open()
  return {
    datastore,
    async close () {
      await datastore.close()
      await tmp.cleanup()
    }
  }
}

/** An offline CRDT datastore on LevelDB (datastore and blockstore) in a temp dir */
export async function crdtLevel (label, init = {}) {
  const tmp = await tempDir(label)
  const datastore = new LevelDatastore(join(tmp.dir, 'datastore'))
  const blockstore = new LevelBlockstore(join(tmp.dir, 'blocks'))
  await datastore.open()
  await blockstore.open()
  const store = await createCRDTDatastore({ datastore, blockstore }, { namespace: '/crdt', ...init })
  return {
    store,
    datastore,
    blockstore,
    async close () {
      await store.stop()
      await datastore.close()
      await blockstore.close()
      await tmp.cleanup()
    }
  }
}

/** Precomputed keys, so key construction is not timed */
export function makeKeys (count, offset = 0) {
  const keys = new Array(count)
  for (let i = 0; i < count; i++) keys[i] = new Key(keyName(offset + i))
  return keys
}

/** Writes keys[i] = values[i] in batches of `batchSize` through `store.batch()` */
export async function writeBatches (store, keys, values, batchSize) {
  for (let i = 0; i < keys.length; i += batchSize) {
    const b = store.batch()
    const end = Math.min(keys.length, i + batchSize)
    for (let j = i; j < end; j++) b.put(keys[j], values[j])
    await b.commit()
  }
}

/**
 * A replica on libp2p TCP (127.0.0.1) with LevelDB in a temp dir: the
 * writing side of the replication benchmarks.
 */
export async function heliaReplica (label, topic, init = {}) {
  const { createHeliaCRDT } = await import('../../dist/src/helia/index.js')
  const { createReplicaNode } = await import('../../dist/src/node/index.js')
  const tmp = await tempDir(label)
  const node = await createReplicaNode({ directory: tmp.dir })
  const store = await createHeliaCRDT(node, { topic, rebroadcastInterval: 1000, numWorkers: 16, ...init })
  return {
    node,
    store,
    addr: node.libp2p.getMultiaddrs().find(a => a.toString().includes('/tcp/')).toString(),
    async close () {
      await store.stop()
      await node.stop()
      await tmp.cleanup()
    }
  }
}
