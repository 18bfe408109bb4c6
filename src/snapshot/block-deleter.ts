/**
 * Deleting the blocks a compaction covers. Through the blockstore's own
 * `delete` that is one LevelDB write per block (blockstore-level has no
 * batch delete, and blockstore-core's `deleteMany` deletes one at a time):
 * about 60 µs of CPU and a thread-pool hop each, most of a 100k-node
 * compaction. When the blockstore handed to the store *is* a blockstore-level
 * `LevelBlockstore` over classic-level, a run of blocks is one LevelDB
 * batch of deletes under the keys blockstore-level itself reads (see
 * `keyOf`), checked as the sync's local writer checks its writes.
 *
 * Invariants:
 * - A block is reported deleted only once the blockstore no longer finds
 *   it. The first direct batch that holds a block the blockstore had is
 *   checked through it (its `has`, before and after); if the block is still
 *   found, the key layout is not the one assumed: direct batches stop, and
 *   that batch and every later one go through `delete`.
 * - Only a store that is itself a `LevelBlockstore` takes the direct path:
 *   Helia's wrapping blockstores refuse to delete pinned blocks and stop
 *   reproviding what they delete, which a LevelDB batch would skip.
 * - Deleting a block that is gone already is harmless (after a crash part
 *   of a list may be gone): a batch of deletes of absent keys changes
 *   nothing.
 * - Identity CIDs are never stored: they are skipped.
 */

import { canBatch, findLevel, foundThrough, IDENTITY, keyOf } from '../codec/level-blockstore.js'
import type { BatchLevelBlockstore } from '../codec/level-blockstore.js'
import type { DAGBlockstore } from '../interfaces.js'
import type { Logger } from '@libp2p/interface'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/** Blocks deleted side by side, or per LevelDB batch */
export const DELETE_BATCH = 1024

/** A blockstore that may delete blocks, one by one or many at a time */
export interface DeletingBlockstore extends DAGBlockstore {
  delete?(cid: CID, options?: AbortOptions): unknown
  deleteMany?(source: Iterable<CID>, options?: AbortOptions): AsyncIterable<unknown> | Iterable<unknown>
}

/** Deletes blocks of one blockstore */
export interface BlockDeleter {
  /**
   * Deletes the blocks, `DELETE_BATCH` at a time; resolves to how many it
   * asked to delete (0 when the blockstore cannot delete)
   */
  delete(cids: CID[], options?: AbortOptions): Promise<number>
  /** Whether deletes go straight to LevelDB in batches */
  readonly direct: boolean
}

function batchLevel (store: DeletingBlockstore): BatchLevelBlockstore | undefined {
  // only the store itself: not through wrappers (see the invariants)
  const level = findLevel(store)
  if (level == null || (level as unknown) !== store) return undefined
  return canBatch(level) ? level : undefined
}

class Deleter implements BlockDeleter {
  private readonly store: DeletingBlockstore
  private readonly log: Logger
  private level?: BatchLevelBlockstore
  private checked = false
  private warned = false

  constructor (store: DeletingBlockstore, log: Logger) {
    this.store = store
    this.log = log
    this.level = batchLevel(store)
  }

  get direct (): boolean {
    return this.level != null
  }

  async delete (cids: CID[], options?: AbortOptions): Promise<number> {
    const { store } = this
    if (store.delete == null && store.deleteMany == null) {
      if (!this.warned && cids.length > 0) this.log('the blockstore cannot delete blocks: covered blocks kept')
      this.warned = true
      return 0
    }
    let removed = 0
    for (let at = 0; at < cids.length; at += DELETE_BATCH) {
      options?.signal?.throwIfAborted()
      const run = cids.slice(at, at + DELETE_BATCH).filter(cid => cid.multihash.code !== IDENTITY)
      if (!(await this.deleteDirect(run, options))) await this.deleteEach(run, options)
      removed += run.length
    }
    return removed
  }

  /** One LevelDB batch; false (nothing known deleted) when the caller must delete through the store */
  private async deleteDirect (cids: CID[], options?: AbortOptions): Promise<boolean> {
    const level = this.level
    if (level == null || cids.length === 0 || level.db.status !== 'open') return false
    // the first batch holding a block the store has checks the key layout
    let probe: CID | undefined
    if (!this.checked) {
      for (const cid of cids) {
        if (await foundThrough(this.store, cid, options)) {
          probe = cid
          break
        }
      }
      if (probe == null) return false
    }
    await level.db.batch(cids.map(cid => ({ type: 'del' as const, key: keyOf(level, cid) })))
    if (probe != null) {
      if (await foundThrough(this.store, probe, options)) {
        this.level = undefined
        this.log('a block deleted from LevelDB directly is still found through the blockstore: deleting one block at a time')
        return false
      }
      this.checked = true
    }
    return true
  }

  /** Through the blockstore: `delete` side by side, else its `deleteMany` */
  private async deleteEach (cids: CID[], options?: AbortOptions): Promise<void> {
    const { store } = this
    if (store.delete != null) {
      // side by side (a base blockstore's deleteMany runs them one after another)
      await Promise.all(cids.map(async cid => store.delete?.(cid, options)))
      return
    }
    if (store.deleteMany != null) for await (const deleted of store.deleteMany(cids, options)) void deleted
  }
}

/** A deleter of `store`'s blocks: LevelDB batches for a blockstore-level store, else its own deletes */
export function blockDeleter (store: DeletingBlockstore, log: Logger): BlockDeleter {
  return new Deleter(store, log)
}
