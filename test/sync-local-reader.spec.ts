/**
 * The sync server's block reads and frame sends: in-process LevelDB reads
 * under Helia's wrapping blockstores (with their fallback when they
 * disagree with the blockstore), a stream's deliveries stored as one
 * LevelDB batch (with the same fallback), many frames gathered into
 * one send, read back in order, and the reader's pause and resume.
 */

import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { LevelBlockstore } from 'blockstore-level'
import toBuffer from 'it-to-buffer'
import { base58btc } from 'multiformats/bases/base58'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { identity } from 'multiformats/hashes/identity'
import { sha256 } from 'multiformats/hashes/sha2'
import { encode as varintEncode } from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { concat as uint8ArrayConcat } from 'uint8arrays/concat'
import { createHeliaCRDT } from '../src/helia/index.js'
import { FrameReader, FrameWriter } from '../src/helia/sync/frames.js'
import { localReader } from '../src/helia/sync/local-reader.js'
import { localWriter } from '../src/helia/sync/local-writer.js'
import { createReplicaNode } from '../src/node/index.js'
import { enc, tempDir } from './fixtures/stores.js'
import type { FrameStream } from '../src/helia/sync/frames.js'

async function block (text: string): Promise<{ cid: CID, bytes: Uint8Array }> {
  const bytes = enc(text)
  return { cid: CID.createV1(raw.code, await sha256.digest(bytes)), bytes }
}

/**
 * A stream end that counts what was sent and hands it to a reader's
 * `message` listeners. It honours pause(): while paused, what is sent waits
 * (as the muxer's window would hold it back) and arrives on resume().
 */
function loopback (): FrameStream & { send(data: Uint8Array | Uint8ArrayList): boolean, sends: number, pauses: number } {
  const listeners = new Set<(evt: any) => void>()
  const held: Array<Uint8Array | Uint8ArrayList> = []
  const deliver = (data: Uint8Array | Uint8ArrayList): void => { for (const fn of listeners) fn({ data }) }
  const stream = {
    sends: 0,
    pauses: 0,
    readableEnded: false,
    readStatus: 'readable',
    addEventListener (type: string, fn: (evt: any) => void) { if (type === 'message') listeners.add(fn) },
    removeEventListener (type: string, fn: (evt: any) => void) { listeners.delete(fn) },
    send (data: Uint8Array | Uint8ArrayList) {
      stream.sends++
      if (stream.readStatus === 'paused') held.push(data)
      else deliver(data)
      return true
    },
    pause () {
      stream.readStatus = 'paused'
      stream.pauses++
    },
    resume () {
      stream.readStatus = 'readable'
      while (stream.readStatus === 'readable' && held.length > 0) deliver(held.shift() as Uint8Array | Uint8ArrayList)
    }
  }
  return stream as unknown as FrameStream & { send(data: Uint8Array | Uint8ArrayList): boolean, sends: number, pauses: number }
}

/** A frame as the writers send it: varint length, then the bytes */
function framed (body: Uint8Array): Uint8Array {
  return uint8ArrayConcat([varintEncode(body.byteLength), body])
}

/** A wrapping blockstore over `level` that counts the `has` calls it answers; `unwrap` hands out `level` unless `unwraps` is false */
function countingWrapper (level: LevelBlockstore, unwraps = true): { asked: number, get(cid: CID, options?: any): AsyncIterable<Uint8Array> | Iterable<Uint8Array>, has(cid: CID): Promise<boolean>, unwrap?(): LevelBlockstore } {
  const wrapper = {
    asked: 0,
    get: (cid: CID, options?: any) => level.get(cid, options),
    has: async (cid: CID) => { wrapper.asked++; return level.has(cid) },
    ...(unwraps ? { unwrap: () => level } : {})
  }
  return wrapper
}

describe('sync server reads and sends', function () {
  this.timeout(30_000)

  it('reads blocks in-process under Helia\'s wrapping blockstores of a LevelDB replica node', async () => {
    const dir = await tempDir('local-reader')
    const node = await createReplicaNode({ directory: dir.path, listen: [] })
    try {
      const a = await block('stored through helia')
      await node.blockstore.put(a.cid, a.bytes)
      const fallbacks: unknown[] = []
      const reader = localReader(node.blockstore, (err) => fallbacks.push(err))
      expect(reader.direct).to.equal(true)
      const read = reader.read(a.cid)
      expect(read).to.not.be.an.instanceOf(Promise)
      expect(read).to.equalBytes(a.bytes)
      // an identity CID (its bytes are its digest) is answered by Helia and leaves the fast path on
      const inline = enc('inline block')
      const identityCid = CID.createV1(raw.code, identity.digest(inline))
      expect(await reader.read(identityCid)).to.equalBytes(inline)
      expect(reader.direct).to.equal(true)
      const missing = await block('never stored')
      expect(await reader.read(missing.cid)).to.equal(undefined)
      // a miss the blockstore agrees with keeps the fast path on
      expect(reader.direct).to.equal(true)
      expect(fallbacks).to.deep.equal([])
    } finally {
      await node.stop()
      await dir.remove()
    }
  })

  it('reads through the wrapping blockstore, and stops reading in-process, when that finds a block the LevelDB read missed', async () => {
    const dir = await tempDir('local-reader-disagree')
    const level = new LevelBlockstore(dir.path)
    await level.open()
    const elsewhere = new MemoryBlockstore()
    try {
      const a = await block('only in the wrapper')
      await elsewhere.put(a.cid, a.bytes)
      // a wrapper whose blocks are not where the fast path looks
      const wrapper = {
        get: (cid: CID, options?: any) => elsewhere.get(cid, options),
        unwrap: () => level
      }
      const fallbacks: unknown[] = []
      const reader = localReader(wrapper, (err) => fallbacks.push(err ?? 'miss'))
      expect(reader.direct).to.equal(true)
      expect(await reader.read(a.cid)).to.equalBytes(a.bytes)
      expect(reader.direct).to.equal(false)
      expect(fallbacks).to.have.lengthOf(1)
      expect(await reader.read(a.cid)).to.equalBytes(a.bytes)
      expect(fallbacks).to.have.lengthOf(1)
    } finally {
      await level.close()
      await dir.remove()
    }
  })

  it('answers has in-process once a read found a block there, asking the wrapping blockstore before', async () => {
    const dir = await tempDir('local-reader-has')
    const level = new LevelBlockstore(dir.path)
    await level.open()
    const elsewhere = new MemoryBlockstore()
    try {
      const a = await block('stored in LevelDB')
      const b = await block('only in the other wrapper')
      const missing = await block('never stored')
      await level.put(a.cid, a.bytes)
      await elsewhere.put(b.cid, b.bytes)
      const wrapper = countingWrapper(level)
      const reader = localReader(wrapper)
      // nothing found in-process yet: a miss is not trusted
      expect(await reader.has(missing.cid)).to.equal(false)
      expect(wrapper.asked).to.equal(1)
      const hit = reader.has(a.cid)
      expect(hit).to.not.be.an.instanceOf(Promise)
      expect(hit).to.equal(true)
      // the key layout is proven: a miss is answered in-process
      const miss = reader.has(missing.cid)
      expect(miss).to.not.be.an.instanceOf(Promise)
      expect(miss).to.equal(false)
      expect(wrapper.asked).to.equal(1)
      // a wrapper whose blocks are not where the fast path looks still answers for them
      const other = localReader({ get: (cid: CID, options?: any) => elsewhere.get(cid, options), has: async (cid: CID) => elsewhere.has(cid), unwrap: () => level })
      expect(await other.has(b.cid)).to.equal(true)
    } finally {
      await level.close()
      await dir.remove()
    }
  })

  it('answers has in-process once the caller proves the key layout, asking the wrapping blockstore before', async () => {
    const dir = await tempDir('local-reader-prove')
    const level = new LevelBlockstore(dir.path)
    await level.open()
    try {
      const missing = await block('never stored')
      const wrapper = countingWrapper(level)
      const reader = localReader(wrapper)
      expect(await reader.has(missing.cid)).to.equal(false)
      expect(wrapper.asked).to.equal(1)
      reader.prove()
      const miss = reader.has(missing.cid)
      expect(miss).to.not.be.an.instanceOf(Promise)
      expect(miss).to.equal(false)
      expect(wrapper.asked).to.equal(1)
      // a reader with no LevelDB underneath has nothing to prove: it still asks its store
      const plain = countingWrapper(level, false)
      const unwrapped = localReader(plain)
      unwrapped.prove()
      expect(await unwrapped.has(missing.cid)).to.equal(false)
      expect(plain.asked).to.equal(1)
    } finally {
      await level.close()
      await dir.remove()
    }
  })

  it('a replica that stored a carried block straight to LevelDB answers has() of new blocks in-process', async () => {
    const dir = await tempDir('syncing-prove')
    const node = await createReplicaNode({ directory: dir.path, listen: [] })
    const store = await createHeliaCRDT(node, { topic: 'prove' })
    try {
      const sync = store.sync?.blockstore
      if (sync == null) throw new Error('no sync protocol on a replica node')
      let asked = 0
      const has = node.blockstore.has.bind(node.blockstore)
      node.blockstore.has = async (cid, options) => { asked++; return has(cid, options) }
      const carried = await block('carried in a broadcast')
      const missing = await block('not stored')
      await sync.put(carried.cid, carried.bytes)
      // the writer checked its first batch through the blockstore: that proved the layout
      const before = asked
      expect(await sync.has(missing.cid)).to.equal(false)
      expect(await sync.has(carried.cid)).to.equal(true)
      expect(asked, 'no read through Helia\'s blockstore').to.equal(before)
    } finally {
      await store.stop()
      await node.stop()
      await dir.remove()
    }
  })

  it('reads a blockstore without LevelDB through its own get', async () => {
    const store = new MemoryBlockstore()
    const a = await block('in memory')
    await store.put(a.cid, a.bytes)
    const reader = localReader(store)
    expect(reader.direct).to.equal(false)
    expect(await reader.read(a.cid)).to.equalBytes(a.bytes)
    expect(await reader.read((await block('absent')).cid)).to.equal(undefined)
  })

  it('stores a delivery in one LevelDB batch under Helia\'s wrapping blockstores, readable through them', async () => {
    const dir = await tempDir('local-writer')
    const node = await createReplicaNode({ directory: dir.path, listen: [] })
    try {
      const blocks = await Promise.all(['one', 'two', 'three'].map(block))
      const fallbacks: unknown[] = []
      const writer = localWriter(node.blockstore, (err) => fallbacks.push(err))
      expect(writer.direct).to.equal(true)
      expect(await writer.write(blocks)).to.equal(true)
      for (const { cid, bytes } of blocks) {
        expect(await node.blockstore.has(cid)).to.equal(true)
        expect(await toBuffer(node.blockstore.get(cid, { offline: true }))).to.equalBytes(bytes)
      }
      // a delivery holding an identity CID is left to the blockstore
      const inline = enc('inline')
      expect(await writer.write([{ cid: CID.createV1(raw.code, identity.digest(inline)), bytes: inline }])).to.equal(false)
      expect(writer.direct).to.equal(true)
      expect(fallbacks).to.deep.equal([])
    } finally {
      await node.stop()
      await dir.remove()
    }
  })

  it('stops writing to LevelDB directly, leaving nothing there, when the wrapping blockstore does not find what it wrote', async () => {
    const dir = await tempDir('local-writer-disagree')
    const level = new LevelBlockstore(dir.path)
    await level.open()
    try {
      // the same LevelDB, but keys in another multibase than the one the blockstore reads
      const skewed = { db: level.db, base: base58btc }
      const wrapper = {
        get: (cid: CID, options?: any) => level.get(cid, options),
        has: async (cid: CID) => level.has(cid),
        unwrap: () => skewed
      }
      const fallbacks: unknown[] = []
      const writer = localWriter(wrapper, (err) => fallbacks.push(err))
      expect(writer.direct).to.equal(true)
      expect(await writer.write([await block('misplaced')])).to.equal(false)
      expect(writer.direct).to.equal(false)
      expect(fallbacks).to.have.lengthOf(1)
      let entries = 0
      for await (const _ of level.db.keys()) entries++ // eslint-disable-line @typescript-eslint/no-unused-vars
      expect(entries, 'entries left under the wrong keys').to.equal(0)
      expect(await writer.write([await block('next')])).to.equal(false)
    } finally {
      await level.close()
      await dir.remove()
    }
  })

  it('leaves a blockstore without LevelDB to store its own blocks', async () => {
    const writer = localWriter(new MemoryBlockstore())
    expect(writer.direct).to.equal(false)
    expect(await writer.write([await block('in memory')])).to.equal(false)
  })

  it('sends many frames in one send, read back whole and in order', async () => {
    const stream = loopback()
    const reader = new FrameReader(stream, { maxFrame: 1024, highWater: 1 << 20, idleTimeout: 1000 })
    const writer = new FrameWriter(stream, 4096)
    const frames = Array.from({ length: 100 }, (_, i) => enc(`frame ${i} `.repeat(1 + (i % 7))))
    for (const f of frames) await writer.write(f)
    await writer.flush()
    // ~7 KB of frames with a 4 KB threshold: two sends, not one per frame
    expect(stream.sends).to.be.at.most(3)
    for (const f of frames) expect(await reader.next()).to.equalBytes(f)
    expect(reader.hasFrame()).to.equal(false)
    reader.dispose()
  })

  it('resumes a paused stream when the rest of a frame is still to come, however much of it is buffered', async () => {
    const stream = loopback()
    // the high-water mark is the largest frame: a half-read frame above half of it kept the stream paused
    const reader = new FrameReader(stream, { maxFrame: 1000, highWater: 1000, idleTimeout: 3_000 })
    const small = framed(new Uint8Array(500).fill(1))
    const big = framed(new Uint8Array(900).fill(2))
    const first = new Uint8Array(small.byteLength + 600)
    first.set(small)
    first.set(big.subarray(0, 600), small.byteLength)
    stream.send(first)
    expect(stream.pauses, 'paused past the high-water mark').to.equal(1)
    // held back by the pause
    stream.send(big.subarray(600))
    expect(await reader.next()).to.equalBytes(small.subarray(2))
    const started = Date.now()
    expect(await reader.next()).to.equalBytes(big.subarray(2))
    expect(Date.now() - started, 'taken as soon as the resume handed it over, not after the idle timeout').to.be.below(1_500)
    expect(reader.hasFrame()).to.equal(false)
    reader.dispose()
  })

  it('takes a frame larger than the high-water mark, sent in parts, without pausing on its parts', async () => {
    const stream = loopback()
    const reader = new FrameReader(stream, { maxFrame: 1000, highWater: 100, idleTimeout: 2_000 })
    const big = framed(new Uint8Array(900).fill(7))
    const small = framed(new Uint8Array(10).fill(8))
    // the parts of the big frame pile up past the mark with no whole frame to take
    for (let i = 0; i < 750; i += 150) stream.send(big.subarray(i, i + 150))
    expect(stream.pauses, 'no pause while only part of a frame is buffered').to.equal(0)
    stream.send(big.subarray(750))
    expect(stream.pauses, 'paused once a whole frame waits').to.equal(1)
    stream.send(small)
    const started = Date.now()
    expect(await reader.next()).to.equalBytes(big.subarray(2))
    expect(await reader.next()).to.equalBytes(small.subarray(1))
    expect(Date.now() - started).to.be.below(1_000)
    // sent in parts while the reader waits for it: the same
    const later = reader.next()
    for (let i = 0; i < big.byteLength; i += 150) stream.send(big.subarray(i, i + 150))
    expect(await later).to.equalBytes(big.subarray(2))
    reader.dispose()
  })

  it('pauses past the high-water mark and resumes below half of it, each time', async () => {
    const stream = loopback()
    const reader = new FrameReader(stream, { maxFrame: 100, highWater: 400, idleTimeout: 500 })
    const frames = Array.from({ length: 20 }, (_, i) => new Uint8Array(98).fill(i))
    for (const f of frames) stream.send(framed(f))
    expect(stream.pauses).to.equal(1)
    for (const f of frames) expect(await reader.next()).to.equalBytes(f)
    // 20 frames of 100 bytes through a 400-byte mark: paused past 400 (5 frames in), resumed below
    // 200, paused again once the 15 held frames came in, resumed below 200 with nothing left held
    expect(stream.pauses).to.equal(2)
    reader.dispose()
  })
})
