/**
 * Stores the blocks a sync stream delivered, as directly as the local
 * blockstore allows. Helia's `put` costs, per block, a GC read lock, a `has`
 * and a `put` (two LevelDB round trips through the thread pool) and an
 * announcement to the block brokers made before the block is stored (so the
 * syncing blockstore announces it again afterwards). When Helia wraps a
 * blockstore-level `LevelBlockstore` (found as the reader finds it, see
 * local-reader.ts), a delivery of many blocks is one LevelDB batch under
 * the keys blockstore-level itself reads, and the caller announces them
 * once, after the batch landed.
 *
 * Invariants:
 * - A block is reported stored only once it is readable through the
 *   wrapping blockstore. The first direct batch is checked through it (its
 *   `has`); if the check fails the key layout is not the one assumed, the
 *   batch's entries are removed and direct writes are not used again (the
 *   caller stores through the blockstore, as without this writer).
 * - Identity CIDs are never written (their bytes are their digest): a batch
 *   holding one goes through the blockstore.
 * - Putting a block twice is harmless (same key, same bytes).
 */

import { canBatch, findLevel, foundThrough, IDENTITY, keyOf } from '../../codec/level-blockstore.js'
import type { ReadableBlockstore } from './local-reader.js'
import type { BatchLevelBlockstore } from '../../codec/level-blockstore.js'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/** The wrapping blockstore as the writer sees it */
export interface WritableBlockstore extends ReadableBlockstore {
  has(cid: CID, options?: AbortOptions): boolean | Promise<boolean>
}

/** Stores many blocks at once when it can */
export interface LocalWriter {
  /**
   * Stores the blocks in one LevelDB batch and resolves true; resolves
   * false, having stored nothing, when the caller must store them itself
   */
  write(blocks: Array<{ cid: CID, bytes: Uint8Array }>, options?: AbortOptions): Promise<boolean>
  /** Whether writes go straight to LevelDB (the fast path is on) */
  readonly direct: boolean
}

class BlockstoreWriter implements LocalWriter {
  private readonly store: WritableBlockstore
  private level?: BatchLevelBlockstore
  private checked = false
  private readonly onFallback: (err?: Error) => void

  constructor (store: WritableBlockstore, onFallback: (err?: Error) => void) {
    this.store = store
    const level = findLevel(store)
    if (level != null && canBatch(level)) this.level = level
    this.onFallback = onFallback
  }

  get direct (): boolean {
    return this.level != null
  }

  async write (blocks: Array<{ cid: CID, bytes: Uint8Array }>, options?: AbortOptions): Promise<boolean> {
    const level = this.level
    if (level == null || blocks.length === 0 || level.db.status !== 'open') return false
    if (blocks.some(({ cid }) => cid.multihash.code === IDENTITY)) return false
    options?.signal?.throwIfAborted()
    const ops = blocks.map(({ cid, bytes }) => ({ type: 'put' as const, key: keyOf(level, cid), value: bytes }))
    try {
      await level.db.batch(ops)
    } catch (err: any) {
      // closed meanwhile, or the disk failed: the blockstore reports it the usual way
      options?.signal?.throwIfAborted()
      return false
    }
    if (this.checked) return true
    // the first batch: is it where the blockstore reads?
    if (await foundThrough(this.store, blocks[0].cid, options)) {
      this.checked = true
      return true
    }
    this.level = undefined
    this.onFallback(new Error('a block written to LevelDB directly is not found through the blockstore'))
    // leaves nothing under keys nobody reads; a failure here only leaves unread entries
    await level.db.batch(ops.map(({ key }) => ({ type: 'del' as const, key }))).catch(() => {})
    return false
  }
}

/**
 * A writer of `store`'s blocks: one LevelDB batch per delivery when it
 * wraps a blockstore-level store over classic-level, else none (`write`
 * resolves false). `onFallback` is told when the fast path is turned off.
 */
export function localWriter (store: WritableBlockstore, onFallback: (err?: Error) => void = () => {}): LocalWriter {
  return new BlockstoreWriter(store, onFallback)
}
