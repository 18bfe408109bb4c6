/**
 * A ready-made Helia node for replicas: libp2p with TCP (or the memory
 * transport), noise, yamux, identify and gossipsub, bitswap for blocks, and
 * LevelDB stores in a directory (memory stores without one). It listens on
 * 127.0.0.1 only unless told otherwise, and has no bootstrap, mDNS,
 * delegated routing or public gateways: it reaches exactly the peers it is
 * told to dial. The CLI and the demo use it.
 *
 * Inbound limits apply to every address, loopback included: a local
 * cluster reconnecting after a restart gets a per-host rate limit high
 * enough for its own dials instead of an `allow` list that would exempt
 * every local process. Pubsub frames are capped at
 * `DEFAULT_MAX_PUBSUB_MESSAGE_SIZE`.
 *
 * The node's `stop()` is Helia's own: the LevelDB databases close as a Helia
 * component once libp2p and bitswap have stopped (`ReplicaLevelDatastore`).
 */

import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight } from '@helia/libp2p'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { memory } from '@libp2p/memory'
import { tcp } from '@libp2p/tcp'
import { webSockets } from '@libp2p/websockets'
import { MemoryBlockstore } from 'blockstore-core'
import { LevelBlockstore } from 'blockstore-level'
import { MemoryDatastore } from 'datastore-core'
import { LevelDatastore } from 'datastore-level'
import { createHeliaLight } from 'helia'
import { DirectoryLockedError } from '../errors.js'
import { signingKey } from './signing-key.js'
import type { HeliaWithLibp2p } from '@helia/libp2p'
import type { GossipSub } from '@libp2p/gossipsub'
import type { Identify } from '@libp2p/identify'
import type { Metrics, PrivateKey, Startable } from '@libp2p/interface'

/** The services of a replica node's libp2p */
export interface ReplicaNodeServices extends Record<string, unknown> {
  identify: Identify
  pubsub: GossipSub
}

/** A started Helia node built by `createReplicaNode()` */
export type ReplicaNode = HeliaWithLibp2p<ReplicaNodeServices>

export interface ReplicaNodeInit {
  /**
   * Collect metrics on the node's libp2p (as libp2p's own `metrics` option,
   * e.g. `prometheusMetrics()`); `createHeliaCRDT()` registers the store's
   * metrics there too
   */
  metrics?(components: any): Metrics
  /**
   * Keep blocks, the node's datastore and its identity (`peer.key`) here;
   * without one everything is in memory and the identity is new each time
   */
  directory?: string
  /**
   * Addresses to listen on. `/memory/<name>` addresses use the libp2p memory
   * transport; `/ip4/127.0.0.1/tcp/0/ws` adds WebSockets (what a browser
   * replica can dial)
   *
   * @default ['/ip4/127.0.0.1/tcp/0']
   */
  listen?: string[]
  /** Use this identity instead of the stored or a new one */
  privateKey?: PrivateKey
  /**
   * Bitswap's message debounce (ms). 0 sends wants and blocks at once, which
   * roughly doubles DAG walking speed on a LAN
   *
   * @default 0
   */
  bitswapDebounce?: number
  /**
   * How long (ms) an incoming bitswap stream may sit idle before this node
   * resets it. Helia's own default is 10 s, but go-ds-crdt replicas (boxo
   * bitswap) keep one stream per peer open for their wants and do not open
   * another after that reset: a Go replica idle for 10 s could then never
   * fetch a block from this node again. Inbound streams stay bounded by
   * bitswap's `maxInboundStreams`.
   *
   * @default 1_728_000_000 (20 days)
   */
  bitswapMessageReceiveTimeout?: number
  /**
   * IP ranges (as multiaddrs) whose connections are always accepted,
   * bypassing every inbound limit below. Empty by default: an exempt range
   * lets any process there hold unlimited idle sockets
   *
   * @default []
   */
  allow?: string[]
  /**
   * New inbound connections accepted per second from one host. libp2p's
   * own default (5) refuses the dials of a local cluster reconnecting after
   * a partition or restart, since on loopback every replica is the same host
   *
   * @default 100
   */
  inboundConnectionThreshold?: number
  /**
   * Inbound connections still negotiating (encryption, muxer) at once;
   * further ones are closed at once
   *
   * @default 32
   */
  maxIncomingPendingConnections?: number
}

export const DEFAULT_LISTEN = ['/ip4/127.0.0.1/tcp/0']
export const DEFAULT_BITSWAP_DEBOUNCE = 0
/** Idle incoming bitswap streams are kept this long (20 days: below Node's longest timer) */
export const DEFAULT_BITSWAP_MESSAGE_RECEIVE_TIMEOUT = 20 * 24 * 3600 * 1000
export const DEFAULT_ALLOW: string[] = []
export const DEFAULT_INBOUND_CONNECTION_THRESHOLD = 100
export const DEFAULT_MAX_INCOMING_PENDING_CONNECTIONS = 32
/** Largest pubsub frame (bytes) read from a peer: several broadcasts of the largest accepted size */
export const DEFAULT_MAX_PUBSUB_MESSAGE_SIZE = 1024 * 1024

/**
 * The node's LevelDB databases, closed through Helia's component lifecycle.
 * Helia stops its blockstore, datastore, routing and block brokers together
 * with `stop()` from `@libp2p/interface`, which runs every `stop()` before
 * any `afterStop()`. Bitswap's `stop()` still writes to the datastore
 * (libp2p's peer store records the protocols it unregisters), so the
 * databases close in `afterStop()`, once all of those have stopped, and
 * never in `stop()`. Helia's blockstore wrappers do not pass the lifecycle
 * on to the blockstore they wrap, so the datastore, which Helia does stop
 * directly, closes the blockstore too.
 *
 * libp2p runs the same lifecycle on its own components, the datastore among
 * them, and stops before Helia's components do: it is given a plain
 * `LevelDatastore` over the same database, which its lifecycle leaves open.
 *
 * Helia checks the datastore's version before it starts any component, so
 * closed databases are not reopened by `start()`: a stopped directory-backed
 * node is replaced by a new one on the same directory.
 */
class ReplicaLevelDatastore extends LevelDatastore implements Startable {
  private readonly blockstore: LevelBlockstore

  constructor (path: string, blockstore: LevelBlockstore) {
    super(path)
    this.blockstore = blockstore
  }

  start (): void {}
  stop (): void {}

  async afterStop (): Promise<void> {
    if (this.db.status === 'open') await this.close()
    if (this.blockstore.db.status === 'open') await this.blockstore.close()
  }
}

/** Opens a LevelDB store, telling a directory held by another process from other failures */
async function openLevel (store: { open(): Promise<void>, db: { open(): Promise<void> } }, directory: string): Promise<void> {
  try {
    await store.open()
  } catch (err: any) {
    // datastore-level keeps only the message ("Database failed to open"): ask LevelDB itself why
    const why: any = await store.db.open().then(() => undefined, (e: unknown) => e)
    if (why?.code === 'LEVEL_LOCKED' || why?.cause?.code === 'LEVEL_LOCKED') {
      throw new DirectoryLockedError(`Another process holds the data directory ${directory} (is another replica running on it?): stop it or use another directory`, { cause: err })
    }
    throw err
  }
}

async function loadIdentity (directory?: string): Promise<PrivateKey> {
  if (directory == null) return generateKeyPair('Ed25519')
  const file = join(directory, 'peer.key')
  try {
    return privateKeyFromProtobuf(await readFile(file))
  } catch (err: any) {
    if (err.code !== 'ENOENT') throw err
  }
  const key = await generateKeyPair('Ed25519')
  await writeFile(file, privateKeyToProtobuf(key), { mode: 0o600 })
  return key
}

/**
 * Builds and starts a Helia node for a replica.
 *
 * @example
 * ```ts
 * import { createReplicaNode, createHeliaCRDT } from 'datastore-crdt'
 *
 * const node = await createReplicaNode({ directory: './replica-1' })
 * const store = await createHeliaCRDT(node, { topic: 'my-app' })
 * console.log(node.libp2p.getMultiaddrs().map(String))
 * // …
 * await store.stop()
 * await node.stop()
 * ```
 */
export async function createReplicaNode (init: ReplicaNodeInit = {}): Promise<ReplicaNode> {
  const listen = init.listen ?? DEFAULT_LISTEN
  const onlyMemory = listen.length > 0 && listen.every(a => a.startsWith('/memory'))
  const debounce = init.bitswapDebounce ?? DEFAULT_BITSWAP_DEBOUNCE

  let datastore: LevelDatastore | MemoryDatastore
  /** What libp2p (peer store, keychain) writes to: the same database, outside Helia's lifecycle */
  let libp2pDatastore: LevelDatastore | MemoryDatastore
  let blockstore: LevelBlockstore | MemoryBlockstore
  if (init.directory != null) {
    // private: the directory holds the identity key and every value written
    await mkdir(init.directory, { recursive: true, mode: 0o700 })
    const bs = new LevelBlockstore(join(init.directory, 'blocks'))
    const ds = new ReplicaLevelDatastore(join(init.directory, 'datastore'), bs)
    await openLevel(ds, init.directory)
    try {
      await openLevel(bs, init.directory)
    } catch (err) {
      await ds.close()
      throw err
    }
    datastore = ds
    libp2pDatastore = new LevelDatastore(ds.db)
    blockstore = bs
  } else {
    datastore = libp2pDatastore = new MemoryDatastore()
    blockstore = new MemoryBlockstore()
  }

  try {
    // the same identity, signing each gossipsub message without rebuilding its key object (signing-key.ts)
    const privateKey = signingKey(init.privateKey ?? await loadIdentity(init.directory))
    const helia = withBitswap(withLibp2pLight(createHeliaLight({ datastore, blockstore }), {
      privateKey,
      datastore: libp2pDatastore,
      addresses: { listen },
      transports: onlyMemory ? [memory()] : [tcp(), memory(), ...(listen.some(a => a.endsWith('/ws')) ? [webSockets()] : [])],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      peerDiscovery: [],
      ...(init.metrics == null ? {} : { metrics: init.metrics }),
      connectionManager: {
        allow: init.allow ?? DEFAULT_ALLOW,
        inboundConnectionThreshold: init.inboundConnectionThreshold ?? DEFAULT_INBOUND_CONNECTION_THRESHOLD,
        maxIncomingPendingConnections: init.maxIncomingPendingConnections ?? DEFAULT_MAX_INCOMING_PENDING_CONNECTIONS
      },
      services: {
        identify: identify(),
        pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, maxInboundDataLength: DEFAULT_MAX_PUBSUB_MESSAGE_SIZE })
      }
    }), {
      sendBlocksDebounce: debounce,
      sendWantlistDebounce: debounce,
      messageReceiveTimeout: init.bitswapMessageReceiveTimeout ?? DEFAULT_BITSWAP_MESSAGE_RECEIVE_TIMEOUT
    }) as unknown as ReplicaNode
    await helia.start()
    helia.logger.forComponent('datastore-crdt:node')('replica node %s started (%s), listening on %s', helia.libp2p.peerId, init.directory ?? 'in memory', helia.libp2p.getMultiaddrs().map(String).join(', '))

    return helia
  } catch (err) {
    if (datastore instanceof LevelDatastore) await datastore.close()
    if (blockstore instanceof LevelBlockstore) await blockstore.close()
    throw err
  }
}
