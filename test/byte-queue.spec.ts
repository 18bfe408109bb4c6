/**
 * The sync stream's byte queue (src/helia/sync/byte-queue.ts): whatever
 * chunks the bytes arrive in, length-prefixed frames come out whole, in
 * order and byte for byte, as the sender framed them; a frame inside one
 * chunk is a view of it, one across chunks a copy; consumed chunks are
 * dropped in bulk.
 */

import { expect } from 'aegir/chai'
import fc from 'fast-check'
import { encode as varintEncode } from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { ByteQueue } from '../src/helia/sync/byte-queue.js'

/** `bytes` cut at the given points, some pieces handed over as Uint8ArrayLists */
function chunked (bytes: Uint8Array, cuts: number[], lists: boolean[]): Array<Uint8Array | Uint8ArrayList> {
  const points = [...new Set(cuts.map(c => c % (bytes.byteLength + 1)))].sort((a, b) => a - b)
  const out: Array<Uint8Array | Uint8ArrayList> = []
  let from = 0
  for (const [i, at] of [...points, bytes.byteLength].entries()) {
    const piece = bytes.subarray(from, at)
    // an empty piece is handed over too: it must change nothing
    if (lists[i % lists.length] && piece.byteLength > 1) {
      const half = piece.byteLength >> 1
      out.push(new Uint8ArrayList(piece.subarray(0, half), piece.subarray(half)))
    } else {
      out.push(piece)
    }
    from = at
  }
  return out
}

/** Frames taken off the queue the way FrameReader takes them */
function drain (queue: ByteQueue): Uint8Array[] {
  const frames: Uint8Array[] = []
  while (true) {
    const prefix = queue.peekVarint(5)
    if (prefix == null || queue.byteLength < prefix.bytes + prefix.value) return frames
    queue.skip(prefix.bytes)
    frames.push(queue.take(prefix.value))
  }
}

describe('ByteQueue', () => {
  it('gives back the frames that were sent, whatever chunks they arrive in and whenever they are read', () => {
    fc.assert(fc.property(
      fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 40 }),
      fc.array(fc.nat(), { maxLength: 60 }),
      fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }),
      fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }),
      (frames, cuts, lists, readNow) => {
        const wire = new Uint8ArrayList()
        for (const frame of frames) wire.append(varintEncode(frame.byteLength), frame)
        const queue = new ByteQueue()
        const got: Uint8Array[] = []
        for (const [i, piece] of chunked(wire.subarray(), cuts, lists).entries()) {
          queue.append(piece)
          if (readNow[i % readNow.length]) got.push(...drain(queue))
        }
        got.push(...drain(queue))
        expect(got.map(f => [...f])).to.deep.equal(frames.map(f => [...f]))
        expect(queue.byteLength).to.equal(0)
      }
    ))
  })

  it('returns a frame inside one chunk as a view of it, and copies one that spans chunks', () => {
    const queue = new ByteQueue()
    const chunk = Uint8Array.from([3, 1, 2, 3, 4, 9])
    queue.append(chunk)
    const prefix = queue.peekVarint(5)
    expect(prefix).to.deep.equal({ value: 3, bytes: 1 })
    queue.skip(1)
    const inside = queue.take(3)
    expect([...inside]).to.deep.equal([1, 2, 3])
    expect(inside.buffer).to.equal(chunk.buffer)
    queue.append(Uint8Array.from([8, 7]))
    const across = queue.take(3)
    expect([...across]).to.deep.equal([4, 9, 8])
    expect(across.buffer).to.not.equal(chunk.buffer)
    expect(queue.byteLength).to.equal(1)
    expect(queue.take(0).byteLength).to.equal(0)
    expect(() => queue.take(2)).to.throw(RangeError)
  })

  it('holds no chunk it has read past (over TCP a chunk is up to 64 KiB), even while few are buffered', () => {
    const queue = new ByteQueue()
    const first = new Uint8Array(1000).fill(1)
    const second = new Uint8Array(1000).fill(2)
    queue.append(first)
    queue.append(second)
    queue.append(new Uint8Array(1000).fill(3))
    queue.take(1500)
    const held = (queue as unknown as { chunks: Uint8Array[] }).chunks
    expect(held).to.not.include(first)
    expect(held).to.include(second)
    queue.take(500)
    expect(held).to.not.include(second)
    expect(queue.byteLength).to.equal(1000)
  })

  it('reads a varint split over chunks, waits for one not all here, and refuses one longer than the limit', () => {
    const queue = new ByteQueue()
    // 300 = 0xAC 0x02
    queue.append(Uint8Array.from([0xac]))
    expect(queue.peekVarint(5)).to.equal(undefined)
    queue.append(Uint8Array.from([0x02]))
    expect(queue.peekVarint(5)).to.deep.equal({ value: 300, bytes: 2 })
    // peeking takes nothing
    expect(queue.byteLength).to.equal(2)
    queue.clear()
    queue.append(Uint8Array.from([0x80, 0x80, 0x80, 0x80]))
    expect(queue.peekVarint(5)).to.equal(undefined)
    queue.append(Uint8Array.from([0x80, 0x01]))
    expect(() => queue.peekVarint(5)).to.throw(RangeError)
  })

  it('lets consumed chunks go at once and drops their slots in bulk, so taking a frame costs the same however many chunks are buffered', () => {
    const queue = new ByteQueue()
    const count = 20_000
    for (let i = 0; i < count; i++) queue.append(Uint8Array.from([1, i & 0xff]))
    const chunks = (): number => (queue as unknown as { chunks: unknown[] }).chunks.length
    expect(chunks()).to.equal(count)
    for (let i = 0; i < count / 2; i++) {
      queue.skip(1)
      expect(queue.take(1)[0]).to.equal(i & 0xff)
    }
    // half consumed: the consumed half is gone from the array, and no consumed chunk is held
    expect(chunks()).to.be.at.most(count / 2 + 1024)
    const held = (queue as unknown as { chunks: Uint8Array[] }).chunks.filter(c => c.byteLength > 0)
    expect(held).to.have.length(count / 2)
    expect(held[0][1]).to.equal((count / 2) & 0xff)
    expect(queue.byteLength).to.equal(count)
    drain(queue)
    expect(queue.byteLength).to.equal(0)
    expect(chunks()).to.equal(0)
  })
})
