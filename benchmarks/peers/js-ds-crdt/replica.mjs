/**
 * A js-ds-crdt replica on its own stack (Helia 4, libp2p 1, gossipsub 13)
 * with LevelDB in a directory, listening on 127.0.0.1 only, with bitswap as
 * its only block broker, libp2p routing only, and no peer discovery. Import `install()` from
 * ./resolve-hook.mjs first (see there why).
 */

import { join } from 'node:path'
import { mkdir } from 'node:fs/promises'
import { gossipsub } from '@chainsafe/libp2p-gossipsub'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { bitswap } from '@helia/block-brokers'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { LevelBlockstore } from 'blockstore-level'
import { LevelDatastore } from 'datastore-level'
import { libp2pRouting } from '@helia/routers'
import { Helia } from '@helia/utils'
import { Key } from 'interface-datastore'
import { createLibp2p } from 'libp2p'
import { CRDTDatastore, PubSubBroadcaster } from 'js-ds-crdt'
import { prefixLogger } from '@libp2p/logger'

export { Key }

export async function jsReplica (dir, topic, options = {}) {
  await mkdir(dir, { recursive: true })
  const datastore = new LevelDatastore(join(dir, 'datastore'))
  const blockstore = new LevelBlockstore(join(dir, 'blocks'))
  await datastore.open()
  await blockstore.open()
  const libp2p = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncryption: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: [],
    services: {
      identify: identify(),
      pubsub: gossipsub({ allowPublishToZeroTopicPeers: true })
    }
  })
  // Helia 4 assembled as its createHelia() does, minus what this machine
  // cannot use: importing 'helia' itself loads @libp2p/webrtc, whose native
  // module (node-datachannel) downloads its binary at install time; and its
  // default brokers and routers include public HTTP gateways
  const helia = new Helia({
    libp2p,
    datastore,
    blockstore,
    blockBrokers: [bitswap()],
    routers: [libp2pRouting(libp2p)],
    components: { libp2p }
  })
  helia.libp2p = libp2p
  await helia.start()
  const broadcaster = new PubSubBroadcaster(libp2p, topic, prefixLogger('bench').forComponent('pubsub'))
  const store = new CRDTDatastore(datastore, new Key('/crdt'), helia, broadcaster, {
    rebroadcastInterval: 1000,
    numWorkers: 16,
    ...options
  })
  return {
    libp2p,
    helia,
    store,
    addr: libp2p.getMultiaddrs()[0].toString(),
    async close () {
      // js-ds-crdt 0.0.33 has no way to stop its workers (close() only logs),
      // so the process that made it exits when done
      await store.close()
      await helia.stop()
      await datastore.close().catch(() => {})
      await blockstore.close().catch(() => {})
    }
  }
}
