/**
 * An Ed25519 identity key that signs with one OpenSSL key object, made
 * once.
 *
 * `@libp2p/crypto` (5.1.23, the latest) builds a new `KeyObject` from JWK
 * for every signature it makes, which on this project's machines takes
 * longer than the signature itself (~90 µs a signature instead of ~33 µs).
 * A replica signs every gossipsub message it publishes (StrictSign, as
 * go-libp2p-pubsub and so go-ds-crdt expect), so a single put paid that
 * each time. The key returned here is the same key: same bytes, same peer
 * id, same (deterministic) signatures; only `sign()` is cheaper. Other
 * key types are returned as they are.
 */

import { createPrivateKey, sign as cryptoSign } from 'node:crypto'
import { toString as uint8ArrayToString } from 'uint8arrays/to-string'
import type { PrivateKey } from '@libp2p/interface'
import type { AbortOptions } from 'interface-store'
import type { Uint8ArrayList } from 'uint8arraylist'

/** Bytes of an Ed25519 seed (the private half of libp2p's 64-byte raw key) */
const SEED_LENGTH = 32

/**
 * `key` signing through a key object made once (Ed25519), or `key` itself
 * (other key types, or a key Node cannot import)
 */
export function signingKey (key: PrivateKey): PrivateKey {
  if (key.type !== 'Ed25519' || key.raw.byteLength < SEED_LENGTH) return key
  let keyObject: ReturnType<typeof createPrivateKey>
  try {
    keyObject = createPrivateKey({
      format: 'jwk',
      key: {
        kty: 'OKP',
        crv: 'Ed25519',
        d: uint8ArrayToString(key.raw.subarray(0, SEED_LENGTH), 'base64url'),
        x: uint8ArrayToString(key.publicKey.raw, 'base64url')
      }
    })
  } catch {
    return key
  }
  // everything but sign() is the key's own (type, raw, publicKey, equals)
  const fast: PrivateKey = Object.create(key)
  Object.defineProperty(fast, 'sign', {
    value: (message: Uint8Array | Uint8ArrayList, options?: AbortOptions): Uint8Array => {
      options?.signal?.throwIfAborted()
      return cryptoSign(null, message instanceof Uint8Array ? message : message.subarray(), keyObject)
    }
  })
  return fast
}
