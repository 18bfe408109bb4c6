/**
 * Ed25519 verification for trusted mode, through the platform's WebCrypto
 * (`globalThis.crypto.subtle`: Node.js 22+, current browsers). Signing uses
 * the caller's libp2p `PrivateKey`; verifying needs only the 32-byte key,
 * so the core does not pull in `@libp2p/crypto`'s parsers for every key
 * type (they added ~80 KB to the minified browser bundle). It is the same
 * RFC 8032 verification `@libp2p/crypto`'s `publicKey.verify` does.
 *
 * Signing imports the writer's key into WebCrypto once (per `PrivateKey`
 * object) and signs with it: `@libp2p/crypto`'s `sign` rebuilds a key
 * object from JWK on every call, which cost about three times the
 * signature itself on every trusted put. Ed25519 signatures are
 * deterministic, so both give the same bytes; where the platform cannot
 * import the key, the libp2p key signs.
 *
 * Invariants: the cache of imported keys is bounded (cleared past
 * `MAX_CACHED_KEYS`); a platform without Ed25519 makes every verification
 * fail, never pass.
 */

import type { PrivateKey } from '@libp2p/interface'
import type { AbortOptions } from 'interface-store'

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

/** DER prefix of a PKCS#8 Ed25519 private key, followed by the 32-byte seed */
const PKCS8_PREFIX = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]

/** Signing keys imported into WebCrypto, by the libp2p key they came from (undefined: cannot import) */
const signingKeys = new WeakMap<PrivateKey, Promise<CryptoKey | undefined>>()

async function importSigningKey (privateKey: PrivateKey): Promise<CryptoKey | undefined> {
  if (privateKey.type !== 'Ed25519' || privateKey.raw.byteLength < 32) return undefined
  const pkcs8 = new Uint8Array(PKCS8_PREFIX.length + 32)
  pkcs8.set(PKCS8_PREFIX)
  pkcs8.set(privateKey.raw.subarray(0, 32), PKCS8_PREFIX.length)
  try {
    return await globalThis.crypto.subtle.importKey('pkcs8', pkcs8, { name: 'Ed25519' }, false, ['sign'])
  } catch {
    return undefined
  }
}

/** `privateKey`'s Ed25519 signature of `data` (the same bytes its own `sign` gives) */
export async function signEd25519 (privateKey: PrivateKey, data: Uint8Array, options?: AbortOptions): Promise<Uint8Array> {
  let imported = signingKeys.get(privateKey)
  if (imported == null) {
    imported = importSigningKey(privateKey)
    signingKeys.set(privateKey, imported)
  }
  const key = await imported
  options?.signal?.throwIfAborted()
  if (key == null) return privateKey.sign(data, options)
  return new Uint8Array(await globalThis.crypto.subtle.sign({ name: 'Ed25519' }, key, new Uint8Array(data)))
}
