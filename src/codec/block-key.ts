/**
 * Block keys: how go-ds-crdt names a DAG node inside its datastore.
 *
 * A block key is `"/" + base32(multihash)`, with RFC 4648 upper-case base32
 * and no padding (the datastore-key form used across go-ipfs). Set elements,
 * tombstones, heads and processed markers are all stored under block keys,
 * and tombstones on the wire carry block keys as element ids.
 */

import { base32upper } from 'multiformats/bases/base32'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'

/** The dag-pb multicodec */
export const DAG_PB_CODE = 0x70

/** Returns the block key (`/CIQ…`) of a CID: the key of its multihash */
export function blockKey (cid: CID): string {
  return '/' + base32upper.baseEncode(cid.multihash.bytes)
}

/** Returns the CIDv1 dag-pb CID named by a block key, or throws */
export function cidFromBlockKey (key: string): CID {
  const body = key.startsWith('/') ? key.slice(1) : key
  const digest = Digest.decode(base32upper.baseDecode(body))
  return CID.createV1(DAG_PB_CODE, digest)
}

const BLOCK_KEY = /^\/[A-Z2-7]+$/

/**
 * True when `key` is exactly one block key: "/" and the canonical base32 of
 * a well-formed multihash (tombstone ids must be; anything else could
 * reach into another key's entries, e.g. "/b/<block key>" on key "/a").
 */
export function isBlockKey (key: string): boolean {
  if (!BLOCK_KEY.test(key)) return false
  try {
    const bytes = base32upper.baseDecode(key.slice(1))
    const digest = Digest.decode(bytes)
    return '/' + base32upper.baseEncode(digest.bytes) === key
  } catch {
    return false
  }
}
