/**
 * blockstore-level's layout, for the paths that reach its LevelDB directly
 * (the sync's local reader and writer, compaction's block deleter): finding
 * a `LevelBlockstore` under the wrappers around it, and the key it stores a
 * block under. Each user checks the layout through the blockstore before
 * relying on it, and falls back to the blockstore's own methods.
 *
 * Invariants:
 * - `keyOf` is blockstore-level's own key: `/` and the multihash (not the
 *   CID) in the store's multibase, so CIDs of any codec share a block.
 * - Only a LevelDB that reads synchronously (classic-level's `getSync`) is
 *   taken for one.
 */

import { base32UpperKey } from './block-key.js'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/** A LevelDB whose reads may run in-process (classic-level 3) */
export interface SyncLevel {
  status?: string
  supports?: { getSync?: boolean }
  getSync(key: string): Uint8Array | undefined
}

/** blockstore-level's `LevelBlockstore`: `db` and the multibase of its keys are public */
export interface LevelBlockstoreLike {
  db: SyncLevel
  base: { encoder: { encode(bytes: Uint8Array): string } }
}

/** The identity multihash: its digest is the block, never stored */
export const IDENTITY = 0x00

/** How many wrapping levels are looked through for the LevelDB */
const MAX_UNWRAP_DEPTH = 4

function isLevelBlockstore (store: unknown): store is LevelBlockstoreLike {
  const s = store as Partial<LevelBlockstoreLike> | undefined
  return s?.db != null && typeof s.db.getSync === 'function' && s.db.supports?.getSync === true &&
    typeof s.base?.encoder?.encode === 'function'
}

/** The LevelBlockstore under Helia's wrappers, if that is what they wrap */
export function findLevel (store: unknown): LevelBlockstoreLike | undefined {
  let inner: unknown = store
  for (let depth = 0; depth <= MAX_UNWRAP_DEPTH && inner != null; depth++) {
    if (isLevelBlockstore(inner)) return inner
    const next = inner as { unwrap?(): unknown, child?: unknown }
    // Helia's wrappers unwrap(); blockstore-core's IdentityBlockstore keeps its store as `child`
    inner = typeof next.unwrap === 'function' ? next.unwrap() : next.child
  }
  return undefined
}

/** blockstore-level's key of a block: `/` and the multihash in its multibase */
export function keyOf (level: LevelBlockstoreLike, cid: CID): string {
  const base = level.base as LevelBlockstoreLike['base'] & { name?: string, prefix?: string }
  // blockstore-level's default multibase, encoded without building the string char by char
  if (base.name === 'base32upper' && base.prefix === 'B') return base32UpperKey(cid.multihash.bytes, '/B')
  return `/${level.base.encoder.encode(cid.multihash.bytes)}`
}

/** A LevelDB that writes batches (classic-level) */
export interface BatchLevel {
  batch(ops: Array<{ type: 'put' | 'del', key: string, value?: Uint8Array }>): Promise<void>
}

/** A `LevelBlockstore` whose LevelDB writes batches */
export type BatchLevelBlockstore = LevelBlockstoreLike & { db: BatchLevel }

/** Whether `level`'s LevelDB writes batches */
export function canBatch (level: LevelBlockstoreLike): level is BatchLevelBlockstore {
  return typeof (level.db as Partial<BatchLevel>).batch === 'function'
}

/**
 * Whether the blockstore finds a block, false when it fails: how a direct
 * LevelDB write or delete checks it used the keys the blockstore reads
 */
export async function foundThrough (store: { has(cid: CID, options?: AbortOptions): boolean | Promise<boolean> }, cid: CID, options?: AbortOptions): Promise<boolean> {
  try {
    return await store.has(cid, options)
  } catch {
    return false
  }
}
