/**
 * The Helia adapter: one call that builds a CRDT datastore replicating over
 * a Helia node — heads over the node's gossipsub, blocks through its
 * blockstore (bitswap), state in its datastore under a namespace derived
 * from the topic.
 */

import { defaultLogger } from '@libp2p/logger'
import { cleanKey } from '../crdt/layout.js'
import { DefaultCRDTDatastore } from '../engine/crdt-datastore.js'
import { nextPayloadOf } from '../engine/payload-queue.js'
import { DatastoreStoppedError, InvalidOptionsError, MissingServiceError } from '../errors.js'
import { DEFAULT_SESSIONS, heliaDAGSyncer } from './dag-syncer.js'
import { serveMerged } from './merged-protocol.js'
import { pubsubBroadcaster } from './pubsub-broadcaster.js'
import { heliaSync } from './sync/helia-sync.js'
import { TopicWatch } from './topic-watch.js'
import type { WatchedPubSub } from './topic-watch.js'
import type { CRDTDatastore, CRDTDatastoreComponents, CRDTDatastoreInit } from '../interfaces.js'
import type { HeliaDAGSyncerComponents } from './dag-syncer.js'
import type { PubSub, PubSubBroadcaster, PubSubBroadcasterInit } from './pubsub-broadcaster.js'
import type { ReceivedPayload } from '../engine/payload-queue.js'
import type { HeliaSync, SyncInit } from './sync/helia-sync.js'
import type { ComponentLogger, Libp2p, PrivateKey } from '@libp2p/interface'
import type { Datastore } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'

/** The parts of a Helia node the adapter uses */
export interface HeliaLike extends HeliaDAGSyncerComponents {
  libp2p: HeliaDAGSyncerComponents['libp2p'] & Partial<Pick<Libp2p, 'handle' | 'unhandle' | 'dialProtocol' | 'metrics'>> & {
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
  /**
   * Trusted mode: the Ed25519 key this replica signs its broadcasts with.
   * When absent and `writers` is set, the node's own key is used if its
   * libp2p exposes it (a `keychain` service holding the `self` key, as
   * Helia's default node has); otherwise the replica is read-only and its
   * writes throw `NotAWriterError` saying so
   */
  privateKey?: PrivateKey
}

export const DEFAULT_SYNC_PROTOCOL = true

export const DEFAULT_PUBSUB_SERVICE = 'pubsub'

/** Prefix of the namespace derived from the topic: `/datastore-crdt/<topic>` */
export const DEFAULT_NAMESPACE_PREFIX = '/datastore-crdt'

/**
 * The broadcaster of a Helia store: subscribes to the topic while the store
 * runs and unsubscribes when it stops, so the store can stop and start again
 */
export class TopicBroadcaster implements PubSubBroadcaster {
  public readonly topic: string
  private readonly make: () => PubSubBroadcaster
  private readonly watch: TopicWatch
  private current?: PubSubBroadcaster
  private droppedBefore = 0
  private refusedBefore = 0

  constructor (topic: string, make: () => PubSubBroadcaster, watch: TopicWatch) {
    this.topic = topic
    this.make = make
    this.watch = watch
  }

  get dropped (): number {
    return this.droppedBefore + (this.current?.dropped ?? 0)
  }

  /** Payloads the topic validator rejected for trusted mode, since the store was made */
  get refused (): number {
    return this.refusedBefore + (this.current?.refused ?? 0)
  }

  /** Subscribes, unless subscribed already */
  open (): void {
    this.current ??= this.make()
    this.watch.start()
  }

  async broadcast (data: Uint8Array, options?: AbortOptions): Promise<void> {
    await this.subscribed().broadcast(data, options)
  }

  async next (options?: AbortOptions): Promise<Uint8Array> {
    return this.subscribed().next(options)
  }

  /** The next payload with its announcer and the heads the topic validator decoded */
  async nextPayload (options?: AbortOptions): Promise<ReceivedPayload> {
    return nextPayloadOf(this.subscribed(), options)
  }

  /**
   * Replicas that subscribe to the topic while the store runs (the
   * replicator greets them with its heads and may retry given-up branches)
   */
  watchJoins (listener: (peer: string) => void): () => void {
    return this.subscribed().watchJoins?.(listener) ?? (() => {})
  }

  async stop (): Promise<void> {
    this.watch.stop()
    const current = this.current
    this.current = undefined
    if (current == null) return
    this.droppedBefore += current.dropped
    this.refusedBefore += current.refused ?? 0
    await current.stop()
  }

  private subscribed (): PubSubBroadcaster {
    if (this.current == null) throw new DatastoreStoppedError('The store is not subscribed to its topic: it is not running')
    return this.current
  }
}

/**
 * A CRDT datastore on a Helia node, as returned by `createHeliaCRDT()`:
 * subscribes to its topic when started, unsubscribes when stopped, and can
 * be started again
 */
export interface HeliaCRDTDatastore extends CRDTDatastore {
  /** The topic subscription, present while the store runs */
  readonly broadcaster: PubSubBroadcaster
  /** The block-sync protocol's parts, when it is on */
  readonly sync?: HeliaSync
}

/** The implementation of `HeliaCRDTDatastore` (not exported from the package) */
class DefaultHeliaCRDTDatastore extends DefaultCRDTDatastore implements HeliaCRDTDatastore {
  /** The topic subscription, present while the store runs */
  public readonly broadcaster: PubSubBroadcaster
  /** The block-sync protocol's parts, when it is on */
  public readonly sync?: HeliaSync

  private readonly libp2p?: HeliaLike['libp2p']
  private unserve?: () => Promise<void>

  constructor (components: Omit<CRDTDatastoreComponents, 'broadcaster'> & { broadcaster: TopicBroadcaster, libp2p?: HeliaLike['libp2p'], sync?: HeliaSync }, init: CRDTDatastoreInit) {
    super(components, init)
    this.broadcaster = components.broadcaster
    this.libp2p = components.libp2p
    this.sync = components.sync
  }

  /** start() and stop() calls, run one after the other so the subscription follows the store */
  private lifecycle: Promise<unknown> = Promise.resolve()

  override async start (options?: AbortOptions): Promise<void> {
    await this.serially(async () => {
      (this.broadcaster as TopicBroadcaster).open()
      try {
        await this.sync?.start(options)
        await super.start(options)
        const libp2p = this.libp2p
        if (this.unserve == null && libp2p?.handle != null && libp2p.unhandle != null && libp2p.dialProtocol != null) {
          this.unserve = await serveMerged(libp2p as Parameters<typeof serveMerged>[0], this)
        }
      } catch (err) {
        await super.stop().catch(() => {})
        await this.sync?.stop().catch(() => {})
        await this.broadcaster.stop()
        throw err
      }
    })
  }

  override async stop (options?: AbortOptions): Promise<void> {
    await this.serially(async () => {
      await this.unserve?.()
      this.unserve = undefined
      await super.stop(options)
      await this.sync?.stop(options)
      await this.broadcaster.stop()
    })
  }

  private async serially (fn: () => Promise<void>): Promise<void> {
    const run = this.lifecycle.then(fn)
    this.lifecycle = run.catch(() => {})
    await run
  }
}

/**
 * The node's own private key, when its libp2p exposes it: Helia keeps it in
 * the keychain service as `self`. libp2p 3 has no public accessor for it.
 */
async function nodeKey (helia: HeliaLike): Promise<PrivateKey | undefined> {
  const keychain = helia.libp2p.services.keychain as { exportKey?(name: string): Promise<PrivateKey> } | undefined
  if (typeof keychain?.exportKey !== 'function') return undefined
  try {
    const key = await keychain.exportKey('self')
    // only the key of this node's own identity
    const peerId = (helia.libp2p as { peerId?: unknown }).peerId
    return peerId != null && String(peerId) === key.publicKey.toString() ? key : undefined
  } catch {
    return undefined
  }
}

/**
 * Creates and starts a CRDT datastore replicating over a started Helia node
 * that has a gossipsub service. The store can stop and start again; when it
 * is the datastore of another Helia node or libp2p, their `start()` and
 * `stop()` start and stop it.
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
  const { topic, maxQueued, maxQueuedBytes, validate } = init
  if (typeof topic !== 'string' || topic === '') {
    throw new InvalidOptionsError('init.topic must be a non-empty string')
  }
  const bitswap = heliaDAGSyncer(helia, { sessions: init.sessions ?? DEFAULT_SESSIONS, maxBlockSize: init.maxBlockSize })
  const syncInit = init.syncProtocol ?? DEFAULT_SYNC_PROTOCOL
  const sync = syncInit === false ? undefined : heliaSync({ libp2p: helia.libp2p, blockstore: helia.blockstore, fallback: bitswap, logger: helia.logger }, syncInit === true ? {} : syncInit)
  const store = new DefaultHeliaCRDTDatastore({
    datastore: init.datastore ?? helia.datastore,
    blockstore: sync?.blockstore ?? bitswap,
    sync,
    broadcaster: new TopicBroadcaster(
      topic,
      // the validator drops what trusted mode refuses before gossipsub forwards it
      () => pubsubBroadcaster({ pubsub, logger: helia.logger }, { topic, maxQueued, maxQueuedBytes, validate, admit: async (data: Uint8Array): Promise<boolean> => store.admitsBroadcast(data) }),
      new TopicWatch(pubsub as WatchedPubSub, topic, (helia.logger ?? defaultLogger()).forComponent('datastore-crdt:topic'))
    ),
    libp2p: helia.libp2p,
    logger: helia.logger,
    // the store's counters and gauges go where libp2p's own metrics go, when it has any
    metrics: helia.libp2p.metrics,
    privateKey: init.privateKey ?? (init.writers == null ? undefined : await nodeKey(helia))
  }, {
    ...init,
    namespace: init.namespace ?? cleanKey(`${DEFAULT_NAMESPACE_PREFIX}/${topic}`)
  })
  sync?.blockstore.setHave(() => store.heads().map(h => h.cid), async (options) => store.holdsAllBelowHeads(options))
  await store.start(options)
  return store
}
