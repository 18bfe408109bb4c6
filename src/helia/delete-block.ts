/**
 * Deleting a refused block from Helia's blockstore. Helia's `delete` also
 * cancels reproviding, which fails on a node without content routing; the
 * block is then deleted from the store Helia wraps (found through
 * `unwrap()`, at most a few levels down). A block pinned meanwhile stays:
 * the user wants it after all.
 */

import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/** A blockstore that may delete, and may wrap another (Helia's do) */
export interface UnwrappableBlockstore {
  delete?(cid: CID, options?: AbortOptions): unknown
  unwrap?(): UnwrappableBlockstore
}

/** How many wrapping levels `deleteBlock` looks through */
const MAX_UNWRAP_DEPTH = 4

/** Deletes `cid` from `store`, or from the store it wraps when its own delete fails; no-op without `delete` */
export async function deleteBlock (store: UnwrappableBlockstore, cid: CID, options?: AbortOptions): Promise<void> {
  if (store.delete == null) return
  try {
    await store.delete(cid, options)
  } catch (err: any) {
    if (err?.name === 'BlockPinnedError') return
    let inner = store.unwrap?.()
    for (let depth = 0; inner?.unwrap != null && depth < MAX_UNWRAP_DEPTH; depth++) inner = inner.unwrap()
    if (inner?.delete == null) throw err
    await inner.delete(cid, options)
  }
}
