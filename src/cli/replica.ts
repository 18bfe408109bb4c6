/**
 * Starting and stopping the CLI's replica: a LevelDB-backed Helia node from
 * `createReplicaNode()` in the data directory, with a CRDT store on it.
 */

import { multiaddr } from '@multiformats/multiaddr'
import { createHeliaCRDT, createReplicaNode } from '../index.js'
import type { CLIOptions } from './options.js'
import type { HeliaCRDTDatastore, ReplicaNode } from '../index.js'

export interface Replica {
  node: ReplicaNode
  store: HeliaCRDTDatastore
  stop(): Promise<void>
}

export async function startReplica (options: CLIOptions): Promise<Replica> {
  const node = await createReplicaNode({ directory: options.data, listen: options.listen })
  let store: HeliaCRDTDatastore
  try {
    store = await createHeliaCRDT(node, {
      topic: options.topic,
      namespace: options.namespace,
      rebroadcastInterval: options.rebroadcast
    })
  } catch (err) {
    await node.stop()
    throw err
  }
  let stopping: Promise<void> | undefined
  const replica: Replica = {
    node,
    store,
    stop: async () => {
      stopping ??= (async () => {
        await store.stop()
        await node.stop()
      })()
      await stopping
    }
  }
  for (const peer of options.peers) {
    try {
      await node.libp2p.dial(multiaddr(peer), { signal: AbortSignal.timeout(10_000) })
    } catch (err: any) {
      process.stderr.write(`could not dial ${peer}: ${err.message}\n`)
    }
  }
  return replica
}
