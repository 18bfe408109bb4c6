/**
 * The Helia adapter: one call that builds a CRDT datastore replicating over
 * a Helia node — heads over the node's gossipsub, blocks through its
 * blockstore (bitswap), state in its datastore under a namespace derived
 * from the topic.
 */

import { concat as uint8ArrayConcat } from 'uint8arrays/concat'
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
    getConnections?(): Array<{ remoteAddr: Multiaddr, remotePeer: { toString(): string, toCID?(): CID } }>
  }
  blockstore: Omit<DAGBlockstore, 'createSession'> & {
    createSession?(root: CID, options?: AbortOptions & { providers?: Array<CID | Multiaddr>, maxProviders?: number }): ReturnType<NonNullable<DAGBlockstore['createSession']>>
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
   * Fetch each missing block through a Helia session whose providers are
   * the currently connected peers (fresh for every block, asked again until
   * `dagSyncerTimeout`), rather than through bitswap's shared wantlist or a
   * content-routing query (none is configured on a loopback node)
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

/** Pause (ms) before the first extra session is started for a block; it doubles up to SESSION_PAUSE_MAX */
const SESSION_PAUSE_BASE = 200
const SESSION_PAUSE_MAX = 2000
/**
 * Peers the first session for a block asks, and later ones: every peer
 * asked for a block it lacks keeps that want in its bitswap ledger and
 * rescans it on every message from us, so few are asked first
 */
const SESSION_FIRST_PROVIDERS = 2
const SESSION_PROVIDERS = 5
/** Sessions asking for one block at once */
const SESSION_MAX_ATTEMPTS = 8
/** A session that got no answer for this long (ms) is given up, so a new one can ask other peers */
const SESSION_LIFETIME = 30_000

/**
 * The blockstore the walker uses: Helia's, fetching each missing block
 * through sessions whose providers are the peers connected at that moment.
 * While the block has not arrived, another session (to a fresh random few
 * of the connected peers) is started after a growing pause, without giving
 * up the earlier ones, until the caller's signal (`dagSyncerTimeout`)
 * aborts.
 *
 * Sessions ask each provider directly. Helia's plain `get` goes through
 * bitswap's shared wantlist, which does not deliver a block a peer obtains
 * while our want is outstanding (the peer is told of it before storing
 * it), drops a want repeated right after a cancel, and stops sending wants
 * to a peer whose first wantlist message failed: after a crash or a
 * partition, blocks held by connected peers could then not be fetched at
 * all. A session fixed for a whole walk would keep asking peers that have
 * gone, and one given up early would drop a late answer (a peer does not
 * send the same block twice within five seconds).
 */
export function heliaDAGSyncer (helia: HeliaLike, sessions: boolean = DEFAULT_SESSIONS): DAGBlockstore {
  const blockstore = helia.blockstore
  const createSession = blockstore.createSession?.bind(blockstore)
  const getConnections = helia.libp2p.getConnections?.bind(helia.libp2p)
  const put: DAGBlockstore['put'] = (cid, b, o) => blockstore.put(cid, b, o)
  const has: DAGBlockstore['has'] = (cid, o) => blockstore.has(cid, o)
  if (!sessions || createSession == null || getConnections == null) {
    return { get: (cid, o) => blockstore.get(cid, o), put, has }
  }
  /** The connected peers, once each: as peer-id CIDs, which sessions use without dialing */
  const providers = (): Array<CID | Multiaddr> => {
    const byPeer = new Map<string, CID | Multiaddr>()
    for (const c of getConnections()) {
      const id = c.remotePeer.toString()
      if (byPeer.has(id)) continue
      byPeer.set(id, c.remotePeer.toCID?.() ?? (c.remoteAddr.getComponents().some(p => p.name === 'p2p') ? c.remoteAddr : c.remoteAddr.encapsulate(`/p2p/${id}`)))
    }
    return [...byPeer.values()]
  }

  /** One session for one block, given up after SESSION_LIFETIME */
  async function fetchOnce (cid: CID, peers: Array<CID | Multiaddr>, maxProviders: number, signal: AbortSignal): Promise<Uint8Array> {
    const lifetime = new AbortController()
    const timer = setTimeout(() => { lifetime.abort(new Error(`no answer for ${cid} within ${SESSION_LIFETIME} ms`)) }, SESSION_LIFETIME)
    const combined = AbortSignal.any([signal, lifetime.signal])
    let session: ReturnType<NonNullable<typeof createSession>> | undefined
    try {
      session = createSession?.(cid, { signal: combined, providers: peers, maxProviders })
      const chunks: Uint8Array[] = []
      for await (const chunk of session?.get(cid, { signal: combined }) ?? []) chunks.push(chunk)
      return chunks.length === 1 ? chunks[0] : uint8ArrayConcat(chunks)
    } finally {
      clearTimeout(timer)
      ;(session as { close?(): void } | undefined)?.close?.()
    }
  }

  async function fetchBlock (cid: CID, options?: AbortOptions): Promise<Uint8Array> {
    const done = new AbortController()
    const signal = options?.signal == null ? done.signal : AbortSignal.any([options.signal, done.signal])
    const attempts = new Set<Promise<void>>()
    let found: Uint8Array | undefined
    let wake: (() => void) | undefined
    try {
      for (let round = 0; found == null; round++) {
        signal.throwIfAborted()
        if (attempts.size < SESSION_MAX_ATTEMPTS) {
          // a different few of the connected peers each time
          const peers = shuffle(providers())
          if (peers.length > 0) {
            const attempt: Promise<void> = fetchOnce(cid, peers, round === 0 ? SESSION_FIRST_PROVIDERS : SESSION_PROVIDERS, signal)
              .then(bytes => { found ??= bytes; wake?.() }, () => {})
              .finally(() => { attempts.delete(attempt) })
            attempts.add(attempt)
          }
        }
        if (found != null) break
        // until a session brings the block, the pause ends, or the caller gives up
        await new Promise<void>(resolve => {
          const timer = setTimeout(finish, Math.min(SESSION_PAUSE_MAX, SESSION_PAUSE_BASE * 2 ** round))
          signal.addEventListener('abort', finish, { once: true })
          wake = finish
          function finish (): void {
            clearTimeout(timer)
            signal.removeEventListener('abort', finish)
            wake = undefined
            resolve()
          }
        })
      }
      return found
    } finally {
      done.abort()
      await Promise.allSettled([...attempts])
    }
  }

  return {
    async * get (cid, options) {
      if (await blockstore.has(cid, options)) {
        yield * blockstore.get(cid, options)
        return
      }
      yield await fetchBlock(cid, options)
    },
    put,
    has
  }
}

function shuffle <T> (items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[items[i], items[j]] = [items[j], items[i]]
  }
  return items
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
      blockstore: heliaDAGSyncer(helia, init.sessions ?? DEFAULT_SESSIONS),
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
