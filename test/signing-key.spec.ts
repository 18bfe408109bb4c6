/**
 * The replica node's identity key signs through a key object made once: the
 * same key (bytes, peer id, protobuf form) with the same signatures as
 * `@libp2p/crypto`'s, which the other side verifies as usual.
 */

import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { expect } from 'aegir/chai'
import fc from 'fast-check'
import { Uint8ArrayList } from 'uint8arraylist'
import { createReplicaNode } from '../src/node/index.js'
import { signingKey } from '../src/node/signing-key.js'

describe('signing key', function () {
  this.timeout(30_000)

  it('signs as @libp2p/crypto does, for any message, whole or in pieces', async () => {
    const key = await generateKeyPair('Ed25519')
    const fast = signingKey(key)
    expect(fast).to.not.equal(key)
    await fc.assert(fc.asyncProperty(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 4 }), async parts => {
      const list = new Uint8ArrayList(...parts)
      const whole = list.subarray()
      const expected = await key.sign(whole)
      expect(await fast.sign(whole)).to.deep.equal(expected)
      expect(await fast.sign(list)).to.deep.equal(expected)
      expect(await key.publicKey.verify(whole, await fast.sign(whole))).to.equal(true)
    }), { numRuns: 200, seed: 15 })
  })

  it('is the same key: type, bytes, public key, peer id and protobuf form', async () => {
    const key = await generateKeyPair('Ed25519')
    const fast = signingKey(key)
    expect(fast.type).to.equal('Ed25519')
    expect(fast.raw).to.deep.equal(key.raw)
    expect(fast.publicKey.equals(key.publicKey)).to.equal(true)
    expect(fast.equals(key)).to.equal(true)
    expect(peerIdFromPrivateKey(fast).equals(peerIdFromPrivateKey(key))).to.equal(true)
    expect(privateKeyToProtobuf(fast)).to.deep.equal(privateKeyToProtobuf(key))
    expect(privateKeyFromProtobuf(privateKeyToProtobuf(fast)).equals(key)).to.equal(true)
  })

  it('throws for an aborted signal as the key does', async () => {
    const fast = signingKey(await generateKeyPair('Ed25519'))
    expect(() => fast.sign(Uint8Array.of(1), { signal: AbortSignal.abort() })).to.throw().with.property('name', 'AbortError')
  })

  it('returns other key types as they are', async () => {
    const key = await generateKeyPair('secp256k1')
    expect(signingKey(key)).to.equal(key)
  })

  it('a replica node keeps the identity it was given', async () => {
    const key = await generateKeyPair('Ed25519')
    const node = await createReplicaNode({ privateKey: key, listen: ['/memory/signing-key-test'] })
    try {
      expect(node.libp2p.peerId.equals(peerIdFromPrivateKey(key))).to.equal(true)
    } finally {
      await node.stop()
    }
  })
})
