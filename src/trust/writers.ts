/**
 * Writer identities of trusted mode. A writer is named by its libp2p peer
 * ID, which for an Ed25519 key is the identity multihash of the public key:
 * the ID alone carries the key, so a writer list needs nothing else.
 *
 * Invariants: every writer kept is the canonical string form of an Ed25519
 * peer ID (base58btc of the identity multihash, `12D3KooW…`); any other
 * input (RSA or secp256k1 IDs, hashes, junk) is refused with
 * `InvalidOptionsError`, so a list can be compared by string.
 */

import { base36 } from 'multiformats/bases/base36'
import { base58btc } from 'multiformats/bases/base58'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { InvalidOptionsError } from '../errors.js'
import { ed25519Raw, keyTypeOf } from './ed25519.js'
import type { MultihashDigest } from 'multiformats/hashes/interface'

/** Multicodec of the identity hash */
const IDENTITY = 0x00
/** Multicodec of `libp2p-key`, the codec of peer IDs written as CIDs */
const LIBP2P_KEY = 0x72

/**
 * A writer as the caller may give it: a peer ID string (`12D3KooW…` or its
 * CID form), or an object with `toMultihash()` (a libp2p `PeerId` or
 * `PublicKey`)
 */
export type WriterId = string | { toMultihash(): MultihashDigest<number> }

/** The canonical peer ID string of an Ed25519 public key's identity multihash */
export function peerIdOf (multihash: MultihashDigest<number>): string {
  return base58btc.encode(multihash.bytes).slice(1)
}

/** Parses one writer into its canonical peer ID string; throws `InvalidOptionsError` */
export function parseWriter (writer: WriterId): string {
  const multihash = typeof writer === 'string' ? multihashOf(writer) : writer?.toMultihash?.()
  if (multihash == null) {
    throw new InvalidOptionsError('A writer must be a peer ID string, a PeerId or a PublicKey')
  }
  if (multihash.code !== IDENTITY) {
    throw new InvalidOptionsError('A writer must be an Ed25519 peer ID (12D3KooW…): its ID must carry its public key')
  }
  if (ed25519Raw(multihash.digest) == null) {
    const type = keyTypeOf(multihash.digest)
    throw new InvalidOptionsError(type === 'unknown' ? 'A writer\'s peer ID does not hold a valid public key' : `A writer must have an Ed25519 key, got ${type}`)
  }
  return peerIdOf(multihash)
}

/** Parses a list of writers, dropping duplicates, keeping first-seen order */
export function parseWriters (writers: Iterable<WriterId>): string[] {
  if (writers == null || typeof (writers as any)[Symbol.iterator] !== 'function' || typeof writers === 'string') {
    throw new InvalidOptionsError('writers must be a list of peer IDs or public keys')
  }
  return [...new Set([...writers].map(parseWriter))]
}

function multihashOf (id: string): MultihashDigest<number> {
  const text = id.trim()
  try {
    if (text.startsWith('1') || text.startsWith('Q')) {
      return Digest.decode(base58btc.decode(`z${text}`))
    }
    const cid = text.startsWith('k') ? CID.parse(text, base36) : CID.parse(text)
    if (cid.code !== LIBP2P_KEY) throw new Error('not a libp2p-key CID')
    return cid.multihash
  } catch {
    throw new InvalidOptionsError(`Not a peer ID: ${JSON.stringify(text.slice(0, 80))}`)
  }
}
