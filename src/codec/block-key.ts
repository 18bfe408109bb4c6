/**
 * Block keys: how go-ds-crdt names a DAG node inside its datastore.
 *
 * A block key is `"/" + base32(multihash)`, with RFC 4648 upper-case base32
 * and no padding (the datastore-key form used across go-ipfs). Set elements,
 * tombstones, heads and processed markers are all stored under block keys,
 * and tombstones on the wire carry block keys as element ids.
 *
 * `blockKey()` runs several times per merged node (the node, each link,
 * their markers), so it encodes with a table into one string rather than
 * multiformats' character-by-character concatenation. The output is
 * byte-for-byte multiformats' `base32upper` (checked against it in
 * test/codecs.spec.ts). Keys are not remembered per CID object: that broke
 * the go-ds-crdt interop suite (a batch's deletes did not reach Go), not
 * traced yet.
 */

import { base32upper } from 'multiformats/bases/base32'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'

/** The dag-pb multicodec */
export const DAG_PB_CODE = 0x70

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'
/** The alphabet as char codes */
const CODES = Uint8Array.from(ALPHABET, c => c.charCodeAt(0))

/**
 * `lead` + RFC 4648 upper-case base32 of `bytes`, unpadded: `lead` +
 * multiformats' `base32upper.baseEncode(bytes)`, built in one char-code
 * array (`lead` is ASCII)
 */
export function base32UpperKey (bytes: Uint8Array, lead = '/'): string {
  // beyond a few thousand char codes `apply` may exceed the argument limit
  if (bytes.byteLength > 2048) return lead + base32upper.baseEncode(bytes)
  const out = new Uint16Array(lead.length + Math.ceil(bytes.byteLength * 8 / 5))
  let j = 0
  for (; j < lead.length; j++) out[j] = lead.charCodeAt(j)
  let buffer = 0
  let bits = 0
  for (let i = 0; i < bytes.byteLength; i++) {
    buffer = ((buffer << 8) | bytes[i]) & 0xfff
    bits += 8
    while (bits >= 5) {
      bits -= 5
      out[j++] = CODES[(buffer >> bits) & 31]
    }
  }
  if (bits > 0) out[j++] = CODES[(buffer << (5 - bits)) & 31]
  return String.fromCharCode.apply(null, out as unknown as number[])
}

/** Returns the block key (`/CIQ…`) of a CID: the key of its multihash */
export function blockKey (cid: CID): string {
  return base32UpperKey(cid.multihash.bytes)
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
