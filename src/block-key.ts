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
