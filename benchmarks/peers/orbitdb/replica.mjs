/**
 * An OrbitDB 4.0.0 peer: Helia 7 (light) with bitswap, libp2p 3 on TCP
 * 127.0.0.1 only, gossipsub, no peer discovery, LevelDB block and data
 * stores in a directory. createHeliaLight knows dag-pb/raw/identity only,
 * so dag-cbor (OrbitDB's entry codec) is added.
 */

import { join } from 'node:path'
import { mkdir } from 'node:fs/promises'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight } from '@helia/libp2p'
import * as dagCbor from '@ipld/dag-cbor'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { createOrbitDB } from '@orbitdb/core'
import { LevelBlockstore } from 'blockstore-level'
import { LevelDatastore } from 'datastore-level'
import { createHeliaLight } from 'helia'

export async function orbitPeer (dir) {
  await mkdir(dir, { recursive: true })
  const datastore = new LevelDatastore(join(dir, 'datastore'))
  const blockstore = new LevelBlockstore(join(dir, 'blocks'))
  await datastore.open()
  await blockstore.open()
  const helia = withBitswap(withLibp2pLight(createHeliaLight({ datastore, blockstore, codecs: [dagCbor] }), {
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: [],
    services: {
      identify: identify(),
      pubsub: gossipsub({ allowPublishToZeroTopicPeers: true })
    }
  }))
  await helia.start()
  const orbitdb = await createOrbitDB({ ipfs: helia, directory: join(dir, 'orbitdb') })
  return {
    helia,
    libp2p: helia.libp2p,
    orbitdb,
    addr: helia.libp2p.getMultiaddrs()[0].toString(),
    async close () {
      await orbitdb.stop()
      await helia.stop()
      await datastore.close().catch(() => {})
      await blockstore.close().catch(() => {})
    }
  }
}
