/**
 * Signed broadcasts of trusted mode. A writer signs, with its Ed25519
 * libp2p key, a canonical encoding of what its payload announces; the key
 * and the signature travel in the payload's `Signature` field (110).
 *
 * The signed bytes are, in order, each length-prefixed with an unsigned
 * varint:
 *
 *   "datastore-crdt/broadcast-signature/v1"   domain separation
 *   topic                                     no replay on another topic
 *   number of heads, then per head (payload order): CID bytes, DAG name (UTF-8)
 *   number of carried blocks, then the CID bytes of each head carrying one
 *
 * Carried blocks are covered by their CIDs: a receiver keeps a carried
 * block only when its bytes hash to that CID. The encoding is built from
 * the decoded payload, so it does not depend on how the protobuf was laid
 * out. Invariants: `verifyBroadcast` checks the writer list before it
 * verifies (a foreign key costs no signature check), and never quotes the
 * untrusted bytes in its errors.
 */

import { identity } from 'multiformats/hashes/identity'
import * as varint from 'uint8-varint'
import { concat as uint8ArrayConcat } from 'uint8arrays/concat'
import { BROADCAST_DECODE_LIMITS, MAX_BROADCAST_SIZE } from '../codec/broadcast.js'
import { CRDTBroadcast } from '../codec/pb/broadcast.js'
import { UntrustedBroadcastError } from '../errors.js'
import { ed25519Raw, keyTypeOf, signEd25519, verifyEd25519 } from './ed25519.js'
import { peerIdOf } from './writers.js'
import type { PrivateKey } from '@libp2p/interface'
import type { AbortOptions } from 'interface-store'

/** The domain-separation prefix of every signed broadcast */
export const BROADCAST_SIGNATURE_DOMAIN = 'datastore-crdt/broadcast-signature/v1'

/** Length of an Ed25519 signature */
const SIGNATURE_BYTES = 64

const utf8 = new TextEncoder()

/** The bytes a writer signs for a decoded payload (its signature field ignored) */
export function signedBytes (topic: string, message: CRDTBroadcast): Uint8Array {
  const parts: Uint8Array[] = []
  const field = (bytes: Uint8Array): void => {
    parts.push(varint.encode(bytes.byteLength), bytes)
  }
  field(utf8.encode(BROADCAST_SIGNATURE_DOMAIN))
  field(utf8.encode(topic))
  parts.push(varint.encode(message.Heads.length))
  for (const head of message.Heads) {
    field(head.Cid)
    field(utf8.encode(head.DagName))
  }
  const carried = message.Heads.filter(h => h.Block != null && h.Block.byteLength > 0)
  parts.push(varint.encode(carried.length))
  for (const head of carried) field(head.Cid)
  // snapshot announcements (Head field 101) are signed too, so nobody can
  // attach a snapshot of their own to a writer's heads; a payload without
  // any signs exactly the bytes above
  const snapshots = message.Heads.filter(h => h.Snapshot != null && h.Snapshot.byteLength > 0)
  if (snapshots.length > 0) {
    parts.push(varint.encode(snapshots.length))
    for (const head of snapshots) {
      field(head.Cid)
      field(head.Snapshot as Uint8Array)
    }
  }
  return uint8ArrayConcat(parts)
}

/** Returns `payload` with `privateKey`'s signature over its heads for `topic` */
export async function signBroadcast (payload: Uint8Array, privateKey: PrivateKey, topic: string, options?: AbortOptions): Promise<Uint8Array> {
  const message = CRDTBroadcast.decode(payload, { limits: BROADCAST_DECODE_LIMITS })
  const signature = await signEd25519(privateKey, signedBytes(topic, message), options)
  // Appending the field leaves the payload's own bytes (and any field this
  // release does not know) exactly as they were: protobuf reads fields in any order
  const field = CRDTBroadcast.encode({
    Heads: [],
    Signature: { PublicKey: privateKey.publicKey.toMultihash().digest as Uint8Array<ArrayBuffer>, Signature: signature as Uint8Array<ArrayBuffer> }
  })
  return uint8ArrayConcat([payload, field])
}

/**
 * Checks a payload's signature: resolves to the writer's peer ID when the
 * payload is signed for `topic` by a key `isWriter` accepts, else throws
 * `UntrustedBroadcastError`
 */
export async function verifyBroadcast (payload: Uint8Array, topic: string, isWriter: (peerId: string) => boolean, options?: AbortOptions): Promise<string> {
  if (payload.byteLength > MAX_BROADCAST_SIZE) {
    throw new UntrustedBroadcastError('Broadcast exceeds the size limit')
  }
  let message: CRDTBroadcast
  try {
    message = CRDTBroadcast.decode(payload, { limits: BROADCAST_DECODE_LIMITS })
  } catch {
    throw new UntrustedBroadcastError('Broadcast does not decode, so it carries no signature')
  }
  const sig = message.Signature
  if (sig == null || sig.PublicKey.byteLength === 0) {
    throw new UntrustedBroadcastError('Broadcast is not signed')
  }
  const raw = ed25519Raw(sig.PublicKey)
  if (raw == null) {
    const type = keyTypeOf(sig.PublicKey)
    throw new UntrustedBroadcastError(type === 'unknown' ? 'Broadcast signature names no valid public key' : `Broadcast is signed with a ${type} key; writers use Ed25519`)
  }
  if (sig.Signature.byteLength !== SIGNATURE_BYTES) {
    throw new UntrustedBroadcastError('Broadcast signature has the wrong size for Ed25519')
  }
  // the peer ID of an Ed25519 key is the identity multihash of its protobuf bytes
  const writer = peerIdOf(identity.digest(sig.PublicKey))
  if (!isWriter(writer)) {
    throw new UntrustedBroadcastError(`Broadcast is signed by ${writer}, which is not a writer`)
  }
  options?.signal?.throwIfAborted()
  let valid = false
  try {
    valid = await verifyEd25519(raw, sig.Signature, signedBytes(topic, message))
  } catch {
    valid = false
  }
  if (!valid) {
    throw new UntrustedBroadcastError(`Broadcast signature of ${writer} does not verify`)
  }
  return writer
}
