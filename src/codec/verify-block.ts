/**
 * Checks that block bytes are what their CID names. Blocks that arrive
 * outside bitswap (carried in a broadcast, streamed by the sync protocol)
 * are verified with this before they are stored. Only sha2-256 is accepted:
 * it is the hash every replica (ours and go-ds-crdt's) writes.
 */

import { sha256 } from 'multiformats/hashes/sha2'
import { equals as uint8ArrayEquals } from 'uint8arrays/equals'
import type { CID } from 'multiformats/cid'

/** True when `bytes` hash (sha2-256) to the digest in `cid` */
export async function verifyBlock (cid: CID, bytes: Uint8Array): Promise<boolean> {
  if (cid.multihash.code !== sha256.code) return false
  const digest = await sha256.digest(bytes)
  return uint8ArrayEquals(digest.bytes, cid.multihash.bytes)
}
