/**
 * The Helia adapter: one call that builds a CRDT datastore replicating over
 * a Helia node — heads over the node's gossipsub, blocks through its
 * blockstore (bitswap), state in its datastore under a namespace derived
 * from the topic.
 */

import { CRDTDatastore } from './crdt-datastore.js'
import { MissingServiceError } from './errors.js'
import { cleanKey } from './layout.js'
import { pubsubBroadcaster } from './pubsub-broadcaster.js'
import type { CRDTDatastoreInit } from './crdt-datastore.js'
import type { DAGBlockstore } from './engine.js'
import type { PubSub, PubSubBroadcaster, PubSubBroadcasterInit } from './pubsub-broadcaster.js'
import type { ComponentLogger } from '@libp2p/interface'
import type { Datastore } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { CID } from 'multiformats/cid'

/** The parts of a Helia node the adapter uses */
export interface HeliaLike {
  libp2p: {
    services: Record<string, unknown>
    getConnections?(): Array<{ remoteAddr: Multiaddr, remotePeer: { toString(): string } }>
  }
  blockstore: Omit<DAGBlockstore, 'createSession'> & {
    createSession?(root: CID, options?: AbortOptions & { providers?: Multiaddr[] }): ReturnType<NonNullable<DAGBlockstore['createSession']>>
  }
  datastore: Datastore
  logger?: ComponentLogger
}

export interface HeliaCRDTInit extends CRDTDatastoreInit, Omit<PubSubBroadcasterInit, 'topic'> {
  /** The pubsub topic shared by all replicas of this store */
  topic: string
  /**
   * Keep CRDT state here instead of in `helia.datastore`
   */
  datastore?: Datastore
  /**
   * Fetch each DAG branch through a Helia session whose providers are the
   * currently connected peers, so wants go to the peers that hold the DAG
   * rather than through a content-routing query (none is configured on a
   * loopback node). Fetches fall back to the plain blockstore when a session
   * fails.
   *
   * @default true
   */
  sessions?: boolean
  /**
   * Name of the pubsub service in `helia.libp2p.services`
   *
   * @default 'pubsub'
   */
  pubsubService?: string
}

export const DEFAULT_PUBSUB_SERVICE = 'pubsub'
export const DEFAULT_SESSIONS = true

/**
 * The blockstore the walker uses: Helia's, with sessions seeded with the
 * connected peers as providers.
 */
function dagSyncer (helia: HeliaLike, sessions: boolean): DAGBlockstore {
  const blockstore = helia.blockstore
  const createSession = blockstore.createSession?.bind(blockstore)
  const getConnections = helia.libp2p.getConnections?.bind(helia.libp2p)
  if (!sessions || createSession == null || getConnections == null) {
    return { get: (cid, o) => blockstore.get(cid, o), put: (cid, b, o) => blockstore.put(cid, b, o), has: (cid, o) => blockstore.has(cid, o) }
  }
  return {
    get: (cid, o) => blockstore.get(cid, o),
    put: (cid, b, o) => blockstore.put(cid, b, o),
    has: (cid, o) => blockstore.has(cid, o),
    createSession: (root, options) => {
      const providers = getConnections().map(c => {
        const id = c.remotePeer.toString()
        return c.remoteAddr.getComponents().some(p => p.name === 'p2p') ? c.remoteAddr : c.remoteAddr.encapsulate(`/p2p/${id}`)
      })
      return createSession(root, { ...options, providers })
    }
  }
}
/** Prefix of the namespace derived from the topic: `/datastore-crdt/<topic>` */
export const DEFAULT_NAMESPACE_PREFIX = '/datastore-crdt'

/** A CRDT datastore that also stops the broadcaster the adapter made for it */
export class HeliaCRDTDatastore extends CRDTDatastore {
  public readonly broadcaster: PubSubBroadcaster

  constructor (components: ConstructorParameters<typeof CRDTDatastore>[0] & { broadcaster: PubSubBroadcaster }, init: CRDTDatastoreInit) {
    super(components, init)
    this.broadcaster = components.broadcaster
  }

  override async stop (options?: AbortOptions): Promise<void> {
    await super.stop(options)
    await this.broadcaster.stop()
  }
}

/**
 * Creates and starts a CRDT datastore replicating over a started Helia node
 * that has a gossipsub service.
 *
 * @example
 * ```ts
 * import { createHeliaCRDT } from 'datastore-crdt'
 *
 * const store = await createHeliaCRDT(helia, { topic: 'my-app' })
 * await store.put(new Key('/hello'), new TextEncoder().encode('world'))
 * await store.stop() // the Helia node keeps running
 * ```
 */
export async function createHeliaCRDT (helia: HeliaLike, init: HeliaCRDTInit, options?: AbortOptions): Promise<HeliaCRDTDatastore> {
  const serviceName = init.pubsubService ?? DEFAULT_PUBSUB_SERVICE
  let services: Record<string, unknown>
  try {
    services = helia.libp2p.services
  } catch (err: any) {
    throw new MissingServiceError(`The Helia node has no usable libp2p (${err.message}); start it with helia.start() first`)
  }
  const pubsub = services?.[serviceName] as PubSub | undefined
  if (pubsub == null || typeof pubsub.publish !== 'function' || typeof pubsub.subscribe !== 'function') {
    throw new MissingServiceError(`The Helia node has no pubsub service at libp2p.services.${serviceName}: configure gossipsub, e.g. services: { pubsub: gossipsub() }`)
  }
  const { topic, maxQueued, validate } = init
  const broadcaster = pubsubBroadcaster({ pubsub, logger: helia.logger }, { topic, maxQueued, validate })
  try {
    const store = new HeliaCRDTDatastore({
      datastore: init.datastore ?? helia.datastore,
      blockstore: dagSyncer(helia, init.sessions ?? DEFAULT_SESSIONS),
      broadcaster,
      logger: helia.logger
    }, {
      ...init,
      namespace: init.namespace ?? cleanKey(`${DEFAULT_NAMESPACE_PREFIX}/${topic}`)
    })
    await store.start(options)
    return store
  } catch (err) {
    await broadcaster.stop()
    throw err
  }
}
