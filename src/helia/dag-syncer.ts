/**
 * The DAG syncer of the Helia adapter: Helia's blockstore, fetching each
 * missing block from the connected peers one peer at a time, best first.
 *
 * Each ask is a bitswap session with a single provider: the peer answers
 * with the block or with DONT_HAVE, so a miss is known after one round trip
 * and the next peers are asked at once. Peers that served blocks lately are
 * asked first (the peer that served a node almost always holds its
 * children), so a walk usually costs one want per block. Asking few peers
 * matters beyond speed: Helia's bitswap never cancels a want, and a peer
 * that lacks a block keeps our want in its ledger and rescans it on every
 * message from us until it gets the block.
 *
 * Helia's plain `get` is not used: its shared wantlist does not deliver a
 * block a peer obtains while our want is outstanding, drops a want repeated
 * right after a cancel, and stops sending wants to a peer whose first
 * wantlist message failed, so after a crash or a partition blocks held by
 * connected peers could not be fetched at all. Nor is one session kept for
 * a whole walk: it would keep asking peers that have gone.
 *
 * A fetch may name a peer to ask first (`preferPeer`: the peer that
 * announced the head), when it is connected. A `probe` fetch (repairs)
 * fails as soon as every connected peer said it lacks the block, instead
 * of asking again until its deadline. A fetch that ends without any peer
 * to ask (none connected) fails with `NoPeersAskedError`: it proves
 * nothing about the block, so the store does not count it towards giving
 * the branch up.
 *
 * Nothing fetched reaches the persistent blockstore before it decodes as a
 * node: Helia's own `get` and sessions store a block as soon as bitswap
 * delivers it, so the syncer asks Helia's block brokers (bitswap, which
 * checks every block against the CID it was sent for) directly, holds the
 * bytes in memory, and `put`s them only when they are at most
 * `maxBlockSize` bytes and decode as a delta node. Junk is handed to the
 * store unstored, refused there, and never served to others. Where the
 * brokers cannot be reached (a blockstore that is not Helia's), blocks go
 * through the blockstore's `get`, which may store them; the syncer then
 * remembers what it fetched lately and deletes it again when the store
 * refuses it (`discard()`).
 */

import { defaultLogger } from '@libp2p/logger'
import { anySignal } from 'any-signal'
import { concat as uint8ArrayConcat } from 'uint8arrays/concat'
import { decodeNode } from '../codec/dag-node.js'
import { DEFAULT_MAX_BLOCK_SIZE } from '../engine/crdt-datastore.js'
import { NoPeersAskedError } from '../errors.js'
import { announceStored, findBlockBrokers } from './block-brokers.js'
import { deleteBlock } from './delete-block.js'
import type { DAGBlockstore } from '../interfaces.js'
import type { ComponentLogger } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'
import type { ProgressOptions } from 'progress-events'

/** A single-provider session as Helia's blockstore makes it */
interface Session {
  get(cid: CID, options?: AbortOptions & ProgressOptions): AsyncIterable<Uint8Array> | Iterable<Uint8Array>
  close?(): void
}

/** The parts of a Helia node the DAG syncer uses */
export interface HeliaDAGSyncerComponents {
  /** Logs under `datastore-crdt:dag-syncer`; defaults to `@libp2p/logger`'s */
  logger?: ComponentLogger
  libp2p: {
    getConnections?(): Array<{ remoteAddr: Multiaddr, remotePeer: { toString(): string, toCID?(): CID } }>
  }
  blockstore: Omit<DAGBlockstore, 'createSession' | 'discard'> & {
    delete?(cid: CID, options?: AbortOptions): unknown
    /** Helia's wrapping blockstores hand out the store they wrap */
    unwrap?(): HeliaDAGSyncerComponents['blockstore']
    createSession?(root: CID, options?: AbortOptions & { providers?: Array<CID | Multiaddr>, maxProviders?: number }): Session
  }
}

export interface HeliaDAGSyncerInit {
  /**
   * Ask the connected peers through bitswap sessions (see above); `false`
   * uses the blockstore's plain `get`
   *
   * @default true
   */
  sessions?: boolean

  /**
   * Fetched blocks larger than this (bytes) are never stored; the store
   * refuses them too (its own `maxBlockSize`)
   *
   * @default DEFAULT_MAX_BLOCK_SIZE
   */
  maxBlockSize?: number
}

export const DEFAULT_SESSIONS = true

/** Peers asked at once for a block when no peer is known to serve well */
const FIRST_ASKS = 2
/** Peers asked at once after the first ones did not have the block */
const LATER_ASKS = 4
/** Asks for one block in flight at most */
const MAX_ASKS = 12
/** Wait (ms) for an answer before asking more peers */
const ANSWER_WAIT = 500
/** Wait (ms) before asking again once every connected peer was asked; doubles up to PAUSE_MAX */
const PAUSE_BASE = 200
const PAUSE_MAX = 2000
/** An ask with no answer for this long (ms) is given up (later asks to the same peer stay) */
const ASK_LIFETIME = 10_000
/**
 * A probe's ask to a peer that said it lacks the block before (ms). A
 * bitswap peer sends DONT_HAVE once per want and keeps the want, so it
 * answers a repeated want only with the block: one that got the block
 * since sends it at once, and its silence is its no
 */
const REASK_LIFETIME = 3_000
/** Blocks remembered with the peers that said they lack them, at most */
const MAX_REFUSALS = 4096
/** Peers remembered as having served blocks, most recent first */
const MAX_GOOD_PEERS = 32
/** Blocks remembered as fetched from the network (and so removable when refused) */
const MAX_FETCHED = 4096

/**
 * Creates the DAG syncer over a Helia node's blockstore and connections.
 * `createHeliaCRDT()` uses it; pass it as `blockstore` to
 * `createCRDTDatastore()` to build the store by hand.
 *
 * @example
 * ```ts
 * import { createCRDTDatastore, heliaDAGSyncer, pubsubBroadcaster } from 'datastore-crdt'
 *
 * const store = await createCRDTDatastore({
 *   datastore,
 *   blockstore: heliaDAGSyncer(helia),
 *   broadcaster: pubsubBroadcaster({ pubsub: helia.libp2p.services.pubsub }, { topic: 'my-app' })
 * })
 * ```
 */
export function heliaDAGSyncer (helia: HeliaDAGSyncerComponents, init: HeliaDAGSyncerInit = {}): DAGBlockstore {
  const blockstore = helia.blockstore
  const log = (helia.logger ?? defaultLogger()).forComponent('datastore-crdt:dag-syncer')
  const createSession = blockstore.createSession?.bind(blockstore)
  const getConnections = helia.libp2p.getConnections?.bind(helia.libp2p)
  const put: DAGBlockstore['put'] = (cid, b, o) => blockstore.put(cid, b, o)
  const has: DAGBlockstore['has'] = (cid, o) => blockstore.has(cid, o)
  const maxBlockSize = init.maxBlockSize ?? DEFAULT_MAX_BLOCK_SIZE
  const brokers = findBlockBrokers(helia)

  /** Blocks this syncer brought in through the blockstore's `get`, oldest first */
  const fetched = new Set<string>()
  const fetchedOne = (cid: CID): void => {
    fetched.add(cid.toString())
    if (fetched.size > MAX_FETCHED) fetched.delete(fetched.values().next().value as string)
  }
  const discard: DAGBlockstore['discard'] = async (cid, o) => {
    if (!fetched.delete(cid.toString()) || blockstore.delete == null) return
    log('removing refused block %c fetched from the network', cid)
    await deleteBlock(blockstore, cid, o)
  }

  /** Stores a block fetched into memory only when it is a node the store can take */
  const keep = async (cid: CID, bytes: Uint8Array, options?: AbortOptions): Promise<void> => {
    if (bytes.byteLength > maxBlockSize) return
    try {
      decodeNode(cid, bytes)
    } catch {
      // the store decodes it again and refuses it with the reason
      return
    }
    await blockstore.put(cid, bytes, options)
    // Helia's put told the brokers before it stored the block: tell them again
    await announceStored(brokers, [cid], options)
  }

  /** Compaction deletes the blocks its snapshot covers from the node's blockstore (a pinned one stays) */
  const remove = async (cid: CID, options?: AbortOptions): Promise<void> => { await deleteBlock(blockstore, cid, options) }

  if (!(init.sessions ?? DEFAULT_SESSIONS) || createSession == null || getConnections == null) {
    const retriever = brokers.find(b => typeof b.retrieve === 'function')
    return {
      async * get (cid, options) {
        if (await blockstore.has(cid, options)) {
          yield * blockstore.get(cid, options)
          return
        }
        if (retriever?.retrieve != null) {
          const bytes = await retriever.retrieve(cid, options)
          await keep(cid, bytes, options)
          yield bytes
          return
        }
        fetchedOne(cid)
        yield * blockstore.get(cid, options)
      },
      put,
      has,
      discard,
      delete: remove
    }
  }

  const sessionBroker = brokers.find(b => typeof b.createSession === 'function')

  /** Peer ids that served blocks, most recent first */
  const goodPeers: string[] = []
  const served = (id: string): void => {
    const at = goodPeers.indexOf(id)
    if (at === 0) return
    if (at > 0) goodPeers.splice(at, 1)
    goodPeers.unshift(id)
    if (goodPeers.length > MAX_GOOD_PEERS) goodPeers.length = MAX_GOOD_PEERS
  }

  /** The connected peers, once each, as sessions take them (peer-id CIDs need no dial) */
  const connected = (): Map<string, CID | Multiaddr> => {
    const byPeer = new Map<string, CID | Multiaddr>()
    for (const c of getConnections()) {
      const id = c.remotePeer.toString()
      if (byPeer.has(id)) continue
      byPeer.set(id, c.remotePeer.toCID?.() ?? (c.remoteAddr.getComponents().some(p => p.name === 'p2p') ? c.remoteAddr : c.remoteAddr.encapsulate(`/p2p/${id}`)))
    }
    return byPeer
  }

  /** Peers not asked yet: the preferred one, those that served lately, the rest shuffled */
  const candidates = (peers: Map<string, CID | Multiaddr>, asked: Set<string>, prefer?: string): string[] => {
    const first = prefer != null && peers.has(prefer) && !asked.has(prefer) ? [prefer] : []
    const good = goodPeers.filter(id => peers.has(id) && !asked.has(id) && id !== prefer)
    const rest = shuffle([...peers.keys()].filter(id => !asked.has(id) && id !== prefer && !good.includes(id)))
    return [...first, ...good, ...rest]
  }

  /** Asks one peer; rejects when it does not have the block or does not answer */
  async function ask (cid: CID, provider: CID | Multiaddr, signal: AbortSignal, onProgress?: ProgressOptions['onProgress'], lifetimeMs = ASK_LIFETIME): Promise<Uint8Array> {
    // the fetch's signal, the ask's lifetime and its end (which stops what the broker's session still does for it)
    const ended = new AbortController()
    const lifetime = AbortSignal.timeout(lifetimeMs)
    const combined = anySignal([signal, lifetime, ended.signal])
    try {
      if (sessionBroker?.createSession != null) {
        // into memory only (the caller's onProgress goes in, so bitswap's own events reach it): nothing is stored before it decodes
        return await sessionBroker.createSession({ signal: combined, providers: [provider], maxProviders: 1 }).retrieve(cid, { signal: combined, onProgress })
      }
      let session: Session | undefined
      try {
        session = createSession?.(cid, { signal: combined, providers: [provider], maxProviders: 1 })
        const chunks: Uint8Array[] = []
        for await (const chunk of session?.get(cid, { signal: combined, onProgress }) ?? []) chunks.push(chunk)
        return chunks.length === 1 ? chunks[0] : uint8ArrayConcat(chunks)
      } finally {
        session?.close?.()
      }
    } catch (err: any) {
      // silence is no answer: only a peer that said it lacks the block (DONT_HAVE) counts as refusing it
      throw lifetime.aborted && !signal.aborted ? Object.assign(new Error(`no answer for ${cid} within ${lifetimeMs} ms`, { cause: err }), { timedOut: true }) : err
    } finally {
      ended.abort()
      combined.clear()
    }
  }

  /** Peers that said they lack a block (DONT_HAVE), by block, most recent last */
  const refusals = new Map<string, Set<string>>()
  const refusedBefore = (cid: string, id: string): boolean => refusals.get(cid)?.has(id) === true
  const noteRefusal = (cid: string, id: string): void => {
    const peers = refusals.get(cid) ?? new Set<string>()
    refusals.delete(cid)
    refusals.set(cid, peers.add(id))
    if (refusals.size > MAX_REFUSALS) refusals.delete(refusals.keys().next().value as string)
  }

  async function fetchBlock (cid: CID, options?: AbortOptions & ProgressOptions & { preferPeer?: string, probe?: boolean }): Promise<Uint8Array> {
    const done = new AbortController()
    const signal = options?.signal == null ? done.signal : AbortSignal.any([options.signal, done.signal])
    const asks = new Set<Promise<void>>()
    const asked = new Set<string>()
    /** Peers whose ask ended without the block */
    const refused = new Set<string>()
    let found: Uint8Array | undefined
    let wake: (() => void) | undefined
    let pauses = 0
    const sleep = async (ms: number): Promise<void> => {
      await new Promise<void>(resolve => {
        const timer = setTimeout(finish, ms)
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
    // asks one peer; the first block to arrive is kept, and every ask that ends wakes the loop below
    /** Every peer asked during this fetch (`asked` is cleared between rounds) */
    const everAsked = new Set<string>()
    const key = cid.toString()
    const launch = (id: string, target: CID | Multiaddr): void => {
      everAsked.add(id)
      asked.add(id)
      // a probe does not wait long on a peer that said no before: it would only answer with the block
      const lifetimeMs = options?.probe === true && refusedBefore(key, id) ? REASK_LIFETIME : ASK_LIFETIME
      const attempt: Promise<void> = ask(cid, target, signal, options?.onProgress, lifetimeMs)
        .then(bytes => {
          if (found == null) {
            found = bytes
            served(id)
            refusals.delete(key)
          }
        }, (err: any) => {
          refused.add(id)
          // an ask ended by the fetch itself (the block came from elsewhere, a deadline), or unanswered, is no refusal
          if (!signal.aborted && err?.timedOut !== true) noteRefusal(key, id)
          log.trace('%s did not serve %c - %s', id, cid, err?.message)
        })
        .finally(() => {
          asks.delete(attempt)
          wake?.()
        })
      asks.add(attempt)
    }
    try {
      // eslint-disable-next-line no-unmodified-loop-condition -- launch()'s asks set found
      while (found == null) {
        signal.throwIfAborted()
        const peers = connected()
        const fresh = candidates(peers, asked, options?.preferPeer)
        if (options?.probe === true && [...peers.keys()].every(id => refused.has(id))) {
          // a probe: every connected peer said no, or none is connected (then nobody was asked, which proves nothing)
          throw everAsked.size > 0 ? refusedError(new Error(`no connected peer has ${cid}`), refusals.get(key)) : new NoPeersAskedError(`no peer connected to ask for ${cid}`)
        }
        if (fresh.length === 0) {
          // Everyone was asked (or none is connected): wait, then ask again.
          // A peer says DONT_HAVE only once per want and keeps the want, so
          // a second ask stays pending until it gets the block. It also
          // nudges the peer: a peer learns of a new block before it can
          // read it, so the block may go out only on our next message.
          await sleep(Math.min(PAUSE_MAX, PAUSE_BASE * 2 ** pauses++))
          asked.clear()
          continue
        }
        const wanted = asked.size > 0 ? LATER_ASKS : goodPeers.includes(fresh[0]) || fresh[0] === options?.preferPeer ? 1 : FIRST_ASKS
        for (const id of fresh.slice(0, Math.max(0, Math.min(wanted, MAX_ASKS - asks.size)))) launch(id, peers.get(id) as CID | Multiaddr)
        // an ask that ends (with the block or a no) wakes this at once; one
        // that is slow to answer lets more peers be asked after a while
        await sleep(ANSWER_WAIT)
      }
      return found
    } catch (err: any) {
      // a deadline that ran out while no peer was connected: nobody was asked
      if (everAsked.size === 0) throw new NoPeersAskedError(`no peer connected to ask for ${cid}`, { cause: err })
      throw err?.refusedBy == null ? refusedError(new Error(`no peer sent ${cid}: ${err?.message}`, { cause: err }), refusals.get(key)) : err
    } finally {
      done.abort()
      await Promise.allSettled([...asks])
    }
  }

  return {
    async * get (cid, options) {
      if (await blockstore.has(cid, options)) {
        yield * blockstore.get(cid, options)
        return
      }
      if (sessionBroker == null) fetchedOne(cid)
      const bytes = await fetchBlock(cid, options)
      if (sessionBroker != null) await keep(cid, bytes, options)
      yield bytes
    },
    put,
    has,
    discard,
    delete: remove
  }
}

/**
 * Names on a fetch error the peers that said they lack the block
 * (`refusedBy`; a peer that only stayed silent is not one): the store
 * records them with a branch it gives up, and a replica joining later that
 * is not among them gets it tried again
 */
function refusedError (err: Error, refused?: Set<string>): Error {
  return Object.assign(err, { refusedBy: [...(refused ?? [])] })
}

function shuffle <T> (items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[items[i], items[j]] = [items[j], items[i]]
  }
  return items
}
