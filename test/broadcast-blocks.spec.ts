/**
 * Head blocks carried in broadcasts: a single put reaches other replicas
 * without a block fetch; carried blocks that do not match their CID are
 * dropped and the head is fetched as
 * before; the blocks ride inside heads, where go-ds-crdt ignores them.
 */

import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { decodeCarriedBlocks, encodeBroadcastWithBlocks } from '../src/codec/broadcast-blocks.js'
import { decodeBroadcast } from '../src/index.js'
import { TestNetwork, stateOf, waitFor } from './fixtures/network.js'
import { enc, memoryReplica } from './fixtures/stores.js'
import type { CID } from 'multiformats/cid'

async function blockOf (blockstore: { get(cid: CID): AsyncIterable<Uint8Array> | Iterable<Uint8Array> }, cid: CID): Promise<Uint8Array> {
  const chunks: Uint8Array[] = []
  for await (const chunk of blockstore.get(cid)) chunks.push(chunk)
  return chunks[0]
}

/** The field numbers at the top level of a protobuf message (length-delimited and varint fields only) */
function topLevelFields (bytes: Uint8Array): number[] {
  const fields: number[] = []
  let at = 0
  const varint = (): number => {
    let n = 0
    let shift = 0
    for (let i = 0; i < 10; i++) {
      const b = bytes[at++]
      n += (b & 0x7f) * 2 ** shift
      if ((b & 0x80) === 0) return n
      shift += 7
    }
    throw new Error('bad varint')
  }
  for (let guard = 0; at < bytes.length && guard < 10_000; guard++) {
    const tag = varint()
    fields.push(Math.floor(tag / 8))
    if ((tag & 7) === 2) {
      const length = varint()
      at += length
    } else if ((tag & 7) === 0) varint()
    else throw new Error(`unexpected wire type ${tag & 7}`)
  }
  return [...new Set(fields)]
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

  it('carries blocks only inside heads: the top level has no field go-ds-crdt does not know', async () => {
    const writer = await memoryReplica()
    try {
      await writer.store.put(new Key('/go'), enc('reads this'))
      const head = writer.store.heads()[0]
      const payload = encodeBroadcastWithBlocks([head], [{ cid: head.cid, bytes: await blockOf(writer.blockstore, head.cid) }], 1 << 20)
      expect((await decodeCarriedBlocks(payload)).blocks).to.have.length(1)
      // go-ds-crdt takes any unknown top-level field for a legacy bare CID and drops the payload
      expect(topLevelFields(payload)).to.deep.equal([1])
    } finally {
      await writer.store.stop()
    }
  })

  it('rejects a corrupted carried block, then fetches the head', async () => {
    net = new TestNetwork({ seed: 11, init: { broadcastBlocksMaxSize: 0 } })
    const [writer, reader] = await net.addMany(2)
    // the reader hears nothing from the writer but the crafted payload below
    net.partition([0], [1])
    await writer.store.put(new Key('/carried'), enc('real'))
    const head = writer.store.heads()[0]
    const real = await blockOf(writer.blockstore.local, head.cid)
    const twisted = real.slice()
    twisted[twisted.length - 1] ^= 0xff
    const payload = encodeBroadcastWithBlocks([head], [{ cid: head.cid, bytes: twisted }], 1 << 20)
    expect((await decodeCarriedBlocks(payload)).rejected).to.equal(1)

    net.heal()
    const before = net.fetches
    await reader.store.receive(payload)
    await waitFor(async () => (await stateOf(reader.store)).length === 1, 10_000, 'the head to be fetched')
    expect(await stateOf(reader.store)).to.deep.equal(['/carried=real'])
    expect(net.fetches).to.be.greaterThan(before)
    expect(await blockOf(reader.blockstore.local, head.cid)).to.deep.equal(real)
  })
})
