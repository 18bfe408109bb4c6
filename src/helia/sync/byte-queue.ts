/**
 * The unread bytes of a stream, as the chunks they arrived in, for a
 * reader that takes many small frames off the front.
 *
 * Why not `Uint8ArrayList`: its `consume()` shifts the array of chunks
 * and replaces the first chunk by a new view each time, so taking one
 * frame costs time in the number of chunks buffered. A sync stream over a
 * transport that passes writes through as they were sent (the memory
 * transport, one chunk per frame prefix and per block) buffers thousands
 * of chunks at its high-water mark: measured on a 30k-node catch-up, ~6,200
 * chunks on average at each take, ~5% of the process's CPU in `consume()`.
 * Here taking a frame moves an index and an offset; a consumed chunk is
 * let go at once (its slot emptied: over TCP a chunk is up to 64 KiB of
 * decrypted transport data), and the emptied slots are dropped in bulk once
 * they are most of the array.
 *
 * A frame inside one chunk is returned as a view of it (no copy, as
 * `Uint8ArrayList.subarray` does); one that spans chunks is copied.
 */

import type { Uint8ArrayList } from 'uint8arraylist'

/** Consumed slots kept at the front of the array before they are dropped in bulk */
const COMPACT_AT = 1024

/** What a consumed slot holds: the chunk itself is let go at once */
const CONSUMED = new Uint8Array(0)

export class ByteQueue {
  private chunks: Uint8Array[] = []
  /** Index in `chunks` of the first unread chunk */
  private head = 0
  /** Bytes of `chunks[head]` already read */
  private offset = 0
  /** Unread bytes */
  private length = 0

  get byteLength (): number {
    return this.length
  }

  /** Adds bytes at the end */
  append (data: Uint8Array | Uint8ArrayList): void {
    if (data instanceof Uint8Array) {
      this.push(data)
      return
    }
    for (const chunk of data) this.push(chunk)
  }

  /**
   * The unsigned varint at the front, without taking it: its value and its
   * length in bytes; undefined when it is not all buffered yet (within
   * `maxBytes`). Throws `RangeError` when `maxBytes` bytes are buffered and
   * none ends the varint.
   */
  peekVarint (maxBytes: number): { value: number, bytes: number } | undefined {
    let value = 0
    let scale = 1
    let read = 0
    let index = this.head
    let at = this.offset
    while (read < maxBytes && read < this.length) {
      const chunk = this.chunks[index]
      if (at >= chunk.byteLength) {
        index++
        at = 0
        continue
      }
      const byte = chunk[at++]
      read++
      value += (byte & 0x7f) * scale
      if (byte < 0x80) return { value, bytes: read }
      scale *= 128
    }
    if (read >= maxBytes) throw new RangeError(`No varint within ${maxBytes} bytes`)
    return undefined
  }

  /** Drops `count` bytes from the front (at most what is buffered) */
  skip (count: number): void {
    this.advance(Math.min(count, this.length), undefined)
  }

  /**
   * Takes `count` bytes from the front: a view of one chunk when they lie in
   * one, else a copy. The caller checks `byteLength` first.
   */
  take (count: number): Uint8Array {
    if (count > this.length) throw new RangeError(`Only ${this.length} bytes buffered, ${count} asked for`)
    if (count === 0) return new Uint8Array(0)
    const chunk = this.chunks[this.head]
    if (count <= chunk.byteLength - this.offset) {
      const view = chunk.subarray(this.offset, this.offset + count)
      this.advance(count, undefined)
      return view
    }
    const out = new Uint8Array(count)
    this.advance(count, out)
    return out
  }

  /** Drops every buffered byte */
  clear (): void {
    this.chunks = []
    this.head = 0
    this.offset = 0
    this.length = 0
  }

  private push (chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return
    this.chunks.push(chunk)
    this.length += chunk.byteLength
  }

  /** Moves the front past `count` bytes, copying them into `into` when given */
  private advance (count: number, into: Uint8Array | undefined): void {
    let left = count
    let written = 0
    while (left > 0) {
      const chunk = this.chunks[this.head]
      const available = chunk.byteLength - this.offset
      const n = Math.min(available, left)
      into?.set(chunk.subarray(this.offset, this.offset + n), written)
      written += n
      left -= n
      this.length -= n
      if (n === available) {
        this.chunks[this.head++] = CONSUMED
        this.offset = 0
      } else {
        this.offset += n
      }
    }
    this.settleHead()
  }

  /** Resets when all is read; drops the consumed slots in bulk */
  private settleHead (): void {
    if (this.length === 0) {
      this.clear()
      return
    }
    // no empty chunk is ever queued, so `head` is at unread bytes here
    if (this.head >= COMPACT_AT && this.head * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.head)
      this.head = 0
    }
  }
}
