/**
 * The Helia adapter: one call that builds a CRDT datastore replicating over
 * a Helia node — heads over the node's gossipsub, blocks through its
 * blockstore (bitswap), state in its datastore under a namespace derived
 * from the topic.
 */

import { CRDTDatastore } from './crdt-datastore.js'
import { MissingServiceError } from './errors.js'
import { DEFAULT_SESSIONS, heliaDAGSyncer } from './helia-dag-syncer.js'
import { cleanKey } from './layout.js'
import { pubsubBroadcaster } from './pubsub-broadcaster.js'
import { heliaSync } from './sync/helia-sync.js'
import type { CRDTDatastoreInit } from './crdt-datastore.js'
import type { HeliaDAGSyncerComponents } from './helia-dag-syncer.js'
import type { PubSub, PubSubBroadcaster, PubSubBroadcasterInit } from './pubsub-broadcaster.js'
import type { HeliaSync, SyncInit } from './sync/helia-sync.js'
import type { ComponentLogger } from '@libp2p/interface'
import type { Datastore } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'

/** The parts of a Helia node the adapter uses */
export interface HeliaLike extends HeliaDAGSyncerComponents {
  libp2p: HeliaDAGSyncerComponents['libp2p'] & {
    services: Record<string, unknown>
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
   * Fetch each missing block by asking the connected peers directly, one
   * bitswap session per peer asked, best peers first (see `heliaDAGSyncer`),
   * rather than through bitswap's shared wantlist or a content-routing
   * query (none is configured on a loopback node)
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
  /**
   * Sync through our block-streaming protocol (`/datastore-crdt/sync/1.0.0`,
   * registered on the node's libp2p) before falling back to bitswap; `false`
   * uses bitswap alone and does not serve the protocol. An object sets its
   * limits
   *
   * @default true
   */
  syncProtocol?: boolean | SyncInit
}

export const DEFAULT_SYNC_PROTOCOL = true

export const DEFAULT_PUBSUB_SERVICE = 'pubsub'

/** Prefix of the namespace derived from the topic: `/datastore-crdt/<topic>` */
export const DEFAULT_NAMESPACE_PREFIX = '/datastore-crdt'

/** A CRDT datastore that also stops the broadcaster the adapter made for it */
export class HeliaCRDTDatastore extends CRDTDatastore {
  public readonly broadcaster: PubSubBroadcaster
  /** The block-sync protocol's parts, when it is on */
  public readonly sync?: HeliaSync

  constructor (components: ConstructorParameters<typeof CRDTDatastore>[0] & { broadcaster: PubSubBroadcaster, sync?: HeliaSync }, init: CRDTDatastoreInit) {
    super(components, init)
    this.broadcaster = components.broadcaster
    this.sync = components.sync
  }

  override async stop (options?: AbortOptions): Promise<void> {
    await super.stop(options)
    await this.sync?.stop(options)
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
  const bitswap = heliaDAGSyncer(helia, { sessions: init.sessions ?? DEFAULT_SESSIONS })
  const syncInit = init.syncProtocol ?? DEFAULT_SYNC_PROTOCOL
  const sync = syncInit === false ? undefined : heliaSync({ libp2p: helia.libp2p, blockstore: helia.blockstore, fallback: bitswap, logger: helia.logger }, syncInit === true ? {} : syncInit)
  try {
    await sync?.start(options)
    const store = new HeliaCRDTDatastore({
      datastore: init.datastore ?? helia.datastore,
      blockstore: sync?.blockstore ?? bitswap,
      broadcaster,
      sync,
      logger: helia.logger
    }, {
      ...init,
      namespace: init.namespace ?? cleanKey(`${DEFAULT_NAMESPACE_PREFIX}/${topic}`)
    })
    sync?.blockstore.setHave(() => store.heads().map(h => h.cid))
    await store.start(options)
    return store
  } catch (err) {
    await sync?.stop()
    await broadcaster.stop()
    throw err
  }
}
