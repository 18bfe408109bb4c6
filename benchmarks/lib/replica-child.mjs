/**
 * The syncing replica of the replication and catch-up benchmarks, run as a
 * child process so its memory is its own: a datastore-crdt replica made by
 * createReplicaNode() + createHeliaCRDT(), LevelDB in `dir`, TCP on
 * 127.0.0.1. Protocol: see child-runner.mjs.
 */

import { multiaddr } from '@multiformats/multiaddr'
import { createHeliaCRDT } from '../../dist/src/helia/index.js'
import { createReplicaNode } from '../../dist/src/node/index.js'
import { runChild } from './child-runner.mjs'

runChild(async ({ dir, topic, init }) => {
  const node = await createReplicaNode({ directory: dir })
  const store = await createHeliaCRDT(node, { topic, rebroadcastInterval: 1000, numWorkers: 16, ...init.crdt })
  return {
    onKey (fn) { store.addEventListener('put', () => { fn() }) },
    async dial (addr) { await node.libp2p.dial(multiaddr(addr)) },
    subscribers (t) { return node.libp2p.services.pubsub.getSubscribers(t).length },
    async countKeys () {
      let n = 0
      for await (const _ of store.queryKeys({})) n++ // eslint-disable-line no-unused-vars
      return n
    },
    stats () {
      const s = store.stats()
      return { heads: s.heads.length, maxHeight: s.maxHeight, sync: store.sync?.blockstore.stats }
    },
    async close () {
      await store.stop()
      await node.stop()
    }
  }
})
