/**
 * Reads blocks of the local blockstore for the sync server, as directly as
 * the store allows. Helia's blockstore answers an offline `get` with a lock,
 * a `has` and a `get`: two LevelDB reads through the thread pool, each an
 * async hop, and a chain can only be walked one read after the other (a
 * node's links are known once it is read). When the store Helia wraps is a
 * blockstore-level `LevelBlockstore` over a LevelDB that reads
 * synchronously (classic-level's `getSync`), a block is one in-process read
 * instead, with no hop.
 *
 * Invariants:
 * - Read only: nothing is stored, nothing is fetched from the network.
 * - The fast path is a shortcut, never the only answer: a miss there is
 *   asked again through the wrapping blockstore; if that finds the block
 *   and a second fast read still misses it (so it was not just stored),
 *   the fast path is wrong for this store (its key layout is not the one
 *   assumed) and is not used again. A fast read that throws falls back the
 *   same way. So a block is served whenever the blockstore has it.
 * - Skipping Helia's lock is safe for reads: a block deleted by garbage
 *   collection meanwhile is either read whole or found absent.
 * - `has` answers a fast miss itself only once the key layout is proven:
 *   a fast read found a block, or the caller says a block written under it
 *   was found through the wrapping blockstore (`prove()`, after the local
 *   writer's check); until then a miss is asked through the wrapping
 *   blockstore. (A replica receiving only carried blocks never reads one
 *   back, so without `prove()` each `has` of a new block took the
 *   wrapper's async read.)
 */

import toBuffer from 'it-to-buffer'
import { findLevel, IDENTITY, keyOf } from '../../codec/level-blockstore.js'
import type { LevelBlockstoreLike } from '../../codec/level-blockstore.js'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/** The local blockstore as the server sees it; `offline` keeps Helia's from going to the network */
export interface ReadableBlockstore {
  get(cid: CID, options?: AbortOptions & { offline?: boolean }): AsyncIterable<Uint8Array> | Iterable<Uint8Array>
  has?(cid: CID, options?: AbortOptions): boolean | Promise<boolean>
  /** Helia's wrapping blockstores hand out the store they wrap */
  unwrap?(): unknown
}

/** Reads local blocks; undefined when absent */
export interface LocalReader {
  /** The block's bytes, synchronously when it can, else a promise; undefined when absent */
  read(cid: CID, options?: AbortOptions): Uint8Array | undefined | Promise<Uint8Array | undefined>
  /** Whether the block is stored, synchronously when it can, else a promise */
  has(cid: CID, options?: AbortOptions): boolean | Promise<boolean>
  /** Whether reads run in-process (the fast path is on) */
  readonly direct: boolean
  /**
   * Takes the key layout as proven by other means: a block written under it
   * was found through the wrapping blockstore (the local writer's check).
   * A fast miss is then an answer, as after a fast read found a block.
   */
  prove(): void
}

class BlockstoreReader implements LocalReader {
  private readonly store: ReadableBlockstore
  private level?: LevelBlockstoreLike
  /** A fast read found a block: the key layout is right, so a fast miss is an answer */
  private proven = false
  private readonly onFallback: (err?: Error) => void

  constructor (store: ReadableBlockstore, onFallback: (err?: Error) => void) {
    this.store = store
    this.level = findLevel(store)
    this.onFallback = onFallback
  }

  get direct (): boolean {
    return this.level != null
  }

  prove (): void {
    if (this.level != null) this.proven = true
  }

  read (cid: CID, options?: AbortOptions): Uint8Array | undefined | Promise<Uint8Array | undefined> {
    const level = this.level
    // identity CIDs hold their bytes: only the wrapper answers them, and that says nothing of the fast path
    if (cid.multihash.code === IDENTITY) return this.readWrapped(cid, options)
    if (level != null && level.db.status === 'open') {
      try {
        const bytes = level.db.getSync(keyOf(level, cid))
        if (bytes != null) {
          this.proven = true
          return bytes
        }
      } catch (err: any) {
        return this.readWrapped(cid, options, err)
      }
      return this.readWrapped(cid, options)
    }
    return this.readWrapped(cid, options)
  }

  has (cid: CID, options?: AbortOptions): boolean | Promise<boolean> {
    const level = this.level
    if (cid.multihash.code !== IDENTITY && level != null && level.db.status === 'open') {
      try {
        if (level.db.getSync(keyOf(level, cid)) != null) {
          this.proven = true
          return true
        }
        if (this.proven) return false
      } catch {
        // asked through the blockstore below
      }
    }
    return this.hasWrapped(cid, options)
  }

  private async hasWrapped (cid: CID, options?: AbortOptions): Promise<boolean> {
    if (this.store.has != null) return this.store.has(cid, options)
    return (await this.readWrapped(cid, options)) != null
  }

  /** Reads through the wrapping blockstore; turns the fast path off when it found what the fast path missed */
  private async readWrapped (cid: CID, options?: AbortOptions, fastError?: Error): Promise<Uint8Array | undefined> {
    let bytes: Uint8Array
    try {
      bytes = await toBuffer(this.store.get(cid, { ...options, offline: true }))
    } catch {
      // absent (an offline get throws)
      return undefined
    }
    const level = this.level
    if (level != null && cid.multihash.code !== IDENTITY) {
      // stored since the fast read missed (a stream delivering it), or the fast path is wrong here
      let seen: Uint8Array | undefined
      try {
        seen = level.db.status === 'open' ? level.db.getSync(keyOf(level, cid)) : undefined
      } catch {
        seen = undefined
      }
      if (seen == null) {
        this.level = undefined
        this.onFallback(fastError)
      }
    }
    return bytes
  }
}

/**
 * A reader of `store`'s blocks: in-process LevelDB reads when it wraps a
 * blockstore-level store over classic-level, else its own offline `get`.
 * `onFallback` is told when the fast path is turned off.
 */
export function localReader (store: ReadableBlockstore, onFallback: (err?: Error) => void = () => {}): LocalReader {
  return new BlockstoreReader(store, onFallback)
}
