/**
 * Runs the shipped Broadcaster compliance suite (`datastore-crdt/compliance`)
 * against the three implementations: the pubsub broadcaster over real
 * gossipsub (memory transport), the Helia store's TopicBroadcaster (which
 * subscribes on open and drops the subscription on stop) and the test
 * network's in-memory inbox.
 */

import { defaultLogger } from '@libp2p/logger'
import { broadcasterTests } from '../src/compliance/index.js'
import { TopicBroadcaster } from '../src/helia/helia.js'
import { pubsubBroadcaster } from '../src/helia/index.js'
import { TopicWatch } from '../src/helia/topic-watch.js'
import { createReplicaNode } from '../src/node/index.js'
import { Inbox, waitFor } from './fixtures/network.js'
import type { TestNetwork } from './fixtures/network.js'
import type { PubSubBroadcaster } from '../src/helia/index.js'
import type { WatchedPubSub } from '../src/helia/topic-watch.js'
import type { ReplicaNode } from '../src/node/index.js'

let seq = 0

/** Two gossipsub nodes on the memory transport, connected, each with a broadcaster made by `make` once both are subscribed */
async function connectedPair (make: (node: ReplicaNode, topic: string) => PubSubBroadcaster): Promise<{ sender: PubSubBroadcaster, receiver: PubSubBroadcaster, nodes: ReplicaNode[] }> {
  const topic = `compliance-${process.pid}-${seq++}`
  const nodes = await Promise.all([0, 1].map(async i => createReplicaNode({ listen: [`/memory/compliance-${process.pid}-${seq}-${i}`] })))
  const [sender, receiver] = nodes.map(n => make(n, topic))
  await nodes[1].libp2p.dial(nodes[0].libp2p.getMultiaddrs()[0])
  await waitFor(() => nodes.every(n => n.libp2p.services.pubsub.getSubscribers(topic).length > 0), 10_000, 'both subscriptions')
  return { sender, receiver, nodes }
}

describe('Broadcaster compliance: pubsubBroadcaster over gossipsub', () => {
  const nodes = new Map<PubSubBroadcaster, ReplicaNode[]>()
  broadcasterTests<PubSubBroadcaster>({
    async setup () {
      const pair = await connectedPair((node, topic) => pubsubBroadcaster({ pubsub: node.libp2p.services.pubsub }, { topic }))
      nodes.set(pair.sender, pair.nodes)
      return pair
    },
    async teardown ({ sender, receiver }) {
      await sender.stop()
      await receiver.stop()
      await Promise.all((nodes.get(sender) ?? []).map(async n => n.stop()))
      nodes.delete(sender)
    }
  })
})

describe('Broadcaster compliance: the Helia store\'s TopicBroadcaster', () => {
  const nodes = new Map<PubSubBroadcaster, ReplicaNode[]>()
  broadcasterTests<PubSubBroadcaster>({
    async setup () {
      const pair = await connectedPair((node, topic) => {
        const pubsub = node.libp2p.services.pubsub
        const log = defaultLogger().forComponent('compliance:topic')
        const broadcaster = new TopicBroadcaster(topic, () => pubsubBroadcaster({ pubsub }, { topic }), new TopicWatch(pubsub as unknown as WatchedPubSub, topic, log))
        broadcaster.open()
        return broadcaster
      })
      nodes.set(pair.sender, pair.nodes)
      return pair
    },
    async teardown ({ sender, receiver }) {
      await sender.stop()
      await receiver.stop()
      await Promise.all((nodes.get(sender) ?? []).map(async n => n.stop()))
      nodes.delete(sender)
    }
  })
})

describe('Broadcaster compliance: the test network\'s in-memory inbox', () => {
  broadcasterTests<Inbox>({
    async setup () {
      const inboxes: Inbox[] = []
      // the network's delivery without faults: every other inbox gets a copy
      const net = {
        deliver (from: number, data: Uint8Array): void {
          inboxes.forEach((inbox, i) => { if (i !== from) inbox.push(data.slice()) })
        }
      } as unknown as TestNetwork
      inboxes.push(new Inbox(net, 0), new Inbox(net, 1))
      return { sender: inboxes[0], receiver: inboxes[1] }
    },
    async teardown () {}
  })
})
