/**
 * Ed25519 verification for trusted mode, through the platform's WebCrypto
 * (`globalThis.crypto.subtle`: Node.js 22+, current browsers). Signing uses
 * the caller's libp2p `PrivateKey`; verifying needs only the 32-byte key,
 * so the core does not pull in `@libp2p/crypto`'s parsers for every key
 * type (they added ~80 KB to the minified browser bundle). It is the same
 * RFC 8032 verification `@libp2p/crypto`'s `publicKey.verify` does.
 *
 * Invariants: the cache of imported keys is bounded (cleared past
 * `MAX_CACHED_KEYS`); a platform without Ed25519 makes every verification
 * fail, never pass.
 */

/** The protobuf prefix of a libp2p Ed25519 public key: Type = 1 (Ed25519), Data = 32 bytes */
const PREFIX = [0x08, 0x01, 0x12, 0x20]

/** Protobuf bytes of a libp2p Ed25519 public key */
export const ED25519_PUBLIC_KEY_BYTES = 36

/** libp2p KeyType enum values, for messages */
const KEY_TYPES = ['RSA', 'Ed25519', 'secp256k1', 'ECDSA']

/** Keys imported into WebCrypto kept at most */
const MAX_CACHED_KEYS = 1024

const cache = new Map<string, Promise<CryptoKey>>()

/** The raw 32-byte key of a protobuf-encoded libp2p Ed25519 public key, or undefined for anything else */
export function ed25519Raw (protobuf: Uint8Array): Uint8Array | undefined {
  if (protobuf.byteLength !== ED25519_PUBLIC_KEY_BYTES) return undefined
  for (let i = 0; i < PREFIX.length; i++) if (protobuf[i] !== PREFIX[i]) return undefined
  return protobuf.subarray(PREFIX.length)
}

/** The key type a protobuf-encoded libp2p public key names, for messages */
export function keyTypeOf (protobuf: Uint8Array): string {
  return protobuf[0] === 0x08 ? KEY_TYPES[protobuf[1]] ?? 'unknown' : 'unknown'
}

/** Whether `signature` is `raw`'s Ed25519 signature of `data` */
export async function verifyEd25519 (raw: Uint8Array, signature: Uint8Array, data: Uint8Array): Promise<boolean> {
  const id = Array.from(raw, b => b.toString(16).padStart(2, '0')).join('')
  let key = cache.get(id)
  if (key == null) {
    if (cache.size >= MAX_CACHED_KEYS) cache.clear()
    key = globalThis.crypto.subtle.importKey('raw', new Uint8Array(raw), { name: 'Ed25519' }, false, ['verify'])
    cache.set(id, key)
    key.catch(() => { cache.delete(id) })
  }
  return globalThis.crypto.subtle.verify({ name: 'Ed25519' }, await key, new Uint8Array(signature), new Uint8Array(data))
}
