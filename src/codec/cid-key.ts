/**
 * The map key a CID is named by in memory (the engine's reservations and
 * runs, the walker, the replicator, the sync client and the syncing
 * blockstore): its bytes read as a latin1 string, one short flat string per
 * CID. Never stored: records on disk name blocks by `blockKey()`.
 *
 * `cid.toString()` builds the base32 text character by character and
 * caches it on the CID (a `Map` per CID); a link CID expected from a stream
 * lives until the merge reaches it, often thousands of blocks later, so its
 * cached text outlives the young generation and piles up in old space as
 * garbage. Keying by bytes costs one string per CID, shared by every map
 * that names it, and leaves the CID itself untouched.
 *
 * Invariants: equal CIDs (same bytes) get equal keys and different ones
 * different keys; a CID longer than `MAX_KEYED_CID` bytes (a peer's
 * oversized junk, bounded by the frame size) is keyed by its text, which
 * starts with a base prefix and so never equals a bytes key (those start
 * with the CID's version byte, 0x01, or a CIDv0 multihash's 0x12).
 */

import type { CID } from 'multiformats/cid'

/** CIDs up to this many bytes are keyed by their bytes */
export const MAX_KEYED_CID = 256

/** A map key naming `cid` (see the file header) */
export function cidKey (cid: CID): string {
  const bytes = cid.bytes
  if (bytes.byteLength > MAX_KEYED_CID) return cid.toString()
  return bytesKey(bytes)
}

/** Short bytes (a CID's, a multihash's) read as a latin1 string: one character per byte, a flat map key */
export function bytesKey (bytes: Uint8Array): string {
  return String.fromCharCode.apply(null, bytes as unknown as number[])
}
