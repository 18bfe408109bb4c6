/**
 * Helia's block brokers (bitswap) as the Helia adapter reaches them: found
 * on the node, and told again of blocks once they are stored.
 *
 * Helia's `put`/`putMany` tell the block brokers of a new block before they
 * store it, so bitswap cannot yet send it to the peers that already want it
 * (a Go replica that learnt the head through this replica's relay, or a
 * third replica asking for a block that reached this one by a sync
 * stream). Whatever stores blocks fetched from the network calls
 * `announceStored()` after the store completed.
 */

import type { Multiaddr } from '@multiformats/multiaddr'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'
import type { ProgressOptions } from 'progress-events'

/** What a Helia block broker (bitswap) offers: fetches that store nothing */
export interface BlockBroker {
  name?: string
  /** Tells the broker a block is now stored (bitswap sends it to peers that want it) */
  announce?(cid: CID, options?: AbortOptions): Promise<void>
  retrieve?(cid: CID, options?: AbortOptions & ProgressOptions): Promise<Uint8Array>
  createSession?(options?: AbortOptions & { providers?: Array<CID | Multiaddr>, maxProviders?: number }): {
    retrieve(cid: CID, options?: AbortOptions & ProgressOptions): Promise<Uint8Array>
  }
}

/**
 * Helia's block brokers (bitswap). Helia keeps them private; a node built
 * by `createHelia`/`createHeliaLight` holds them in `blockBrokers` and its
 * networked blockstore (under `unwrap()`) shares the same list. Anything
 * else found there is ignored.
 */
export function findBlockBrokers (helia: unknown): BlockBroker[] {
  const lists: unknown[] = [(helia as { blockBrokers?: unknown } | undefined)?.blockBrokers]
  let store: unknown = (helia as { blockstore?: unknown } | undefined)?.blockstore
  for (let depth = 0; store != null && depth < 4; depth++) {
    lists.push((store as { blockBrokers?: unknown }).blockBrokers)
    store = typeof (store as { unwrap?: unknown }).unwrap === 'function' ? (store as { unwrap(): unknown }).unwrap() : undefined
  }
  const list = lists.find(l => Array.isArray(l) && l.length > 0) as unknown[] | undefined
  return (list ?? []).filter((b): b is BlockBroker => b != null && typeof b === 'object' && (typeof (b as BlockBroker).retrieve === 'function' || typeof (b as BlockBroker).createSession === 'function'))
}

/** Tells every broker that can be told that these blocks are now stored */
export async function announceStored (brokers: BlockBroker[], cids: CID[], options?: AbortOptions): Promise<void> {
  await Promise.all(brokers.flatMap(broker => broker.announce == null ? [] : cids.map(async cid => broker.announce?.(cid, options))))
}
