/**
 * Head blocks carried in broadcasts: a single put reaches other replicas
 * without a block fetch; carried blocks that do not match their CID, or that
 * are not heads of the payload, are dropped and the head is fetched as
 * before; go-ds-crdt's decoder (ours for field 1) still reads the heads.
 */

import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { decodeBroadcast } from '../src/index.js'
import { decodeCarriedBlocks, encodeBroadcastWithBlocks } from '../src/broadcast-blocks.js'
import { TestNetwork, stateOf, waitFor } from './fixtures/network.js'
import { enc, memoryReplica } from './fixtures/stores.js'

async function blockOf (blockstore: { get(cid: CID): AsyncIterable<Uint8Array> | Iterable<Uint8Array> }, cid: CID): Promise<Uint8Array> {
  const chunks: Uint8Array[] = []
  for await (const chunk of blockstore.get(cid)) chunks.push(chunk)
  return chunks[0]
}

describe('blocks in broadcasts', function () {
  this.timeout(60_000)
  let net: TestNetwork | undefined

  afterEach(async () => {
    await net?.stop()
    net = undefined
  })

  it('a single put reaches every replica in one hop, with no block fetched', async () => {
    net = new TestNetwork({ seed: 7 })
    const replicas = await net.addMany(4)
    for (let i = 0; i < 10; i++) await replicas[i % 4].store.put(new Key(`/one-hop/${i}`), enc(`v${i}`))
    await net.converge({ check: s => s.length === 10 })
    expect(net.fetches).to.equal(0)
  })

  it('with broadcastBlocksMaxSize 0 the heads are fetched as before', async () => {
    net = new TestNetwork({ seed: 7, init: { broadcastBlocksMaxSize: 0 } })
    const replicas = await net.addMany(2)
    await replicas[0].store.put(new Key('/fetched'), enc('v'))
    await net.converge({ check: s => s.length === 1 })
    expect(net.fetches).to.be.at.least(1)
  })

  it('a head larger than the cap is announced without its block', async () => {
    const writer = await memoryReplica()
    try {
      await writer.store.put(new Key('/big'), new Uint8Array(4096))
      const head = writer.store.heads()[0]
      const bytes = await blockOf(writer.blockstore, head.cid)
      const small = encodeBroadcastWithBlocks([head], [{ cid: head.cid, bytes }], 1024)
      const large = encodeBroadcastWithBlocks([head], [{ cid: head.cid, bytes }], 1 << 20)
      expect((await decodeCarriedBlocks(small)).blocks).to.have.length(0)
      expect((await decodeCarriedBlocks(large)).blocks).to.have.length(1)
      // both still decode as a plain broadcast of the head (what go-ds-crdt reads)
      expect(decodeBroadcast(small).get('')?.[0].equals(head.cid)).to.equal(true)
      expect(decodeBroadcast(large).get('')?.[0].equals(head.cid)).to.equal(true)
    } finally {
      await writer.store.stop()
    }
  })

  it('rejects a corrupted carried block and a carried block that is not a head, then fetches the head', async () => {
    net = new TestNetwork({ seed: 11, init: { broadcastBlocksMaxSize: 0 } })
    const [writer, reader] = await net.addMany(2)
    // the reader hears nothing from the writer but the crafted payload below
    net.partition([0], [1])
    await writer.store.put(new Key('/carried'), enc('real'))
    const head = writer.store.heads()[0]
    const real = await blockOf(writer.blockstore.local, head.cid)
    const twisted = real.slice()
    twisted[twisted.length - 1] ^= 0xff
    const strayBytes = enc('stray')
    const stray = CID.createV1(raw.code, await sha256.digest(strayBytes))
    const payload = encodeBroadcastWithBlocks([head], [{ cid: head.cid, bytes: twisted }, { cid: stray, bytes: strayBytes }], 1 << 20)
    expect((await decodeCarriedBlocks(payload)).rejected).to.equal(2)

    net.heal()
    const before = net.fetches
    await reader.store.receive(payload)
    await waitFor(async () => (await stateOf(reader.store)).length === 1, 10_000, 'the head to be fetched')
    expect(await stateOf(reader.store)).to.deep.equal(['/carried=real'])
    expect(net.fetches).to.be.greaterThan(before)
    expect(await reader.blockstore.local.has(stray)).to.equal(false)
    expect(await blockOf(reader.blockstore.local, head.cid)).to.deep.equal(real)
  })
})
