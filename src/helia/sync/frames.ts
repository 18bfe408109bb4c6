/**
 * Length-prefixed frames (unsigned varint length, then the bytes) over a
 * libp2p stream, with back-pressure both ways.
 *
 * Reading: bytes are buffered as they arrive; past `highWater` buffered
 * bytes the stream is paused (the muxer then stops granting the sender
 * window, so the sender's writes wait) and it resumes once the reader has
 * consumed below half of that, or sooner when no whole frame is buffered
 * (the rest of a frame must come in, however large it is), and it is
 * paused only while a whole frame waits to be taken. A stream that is
 * closing or closed is neither paused nor resumed. Before these rules a
 * catch-up read with a 64 KB mark stalled at its first pause and went on
 * by bitswap (~500 nodes/s instead of ~13,000); at the default mark no run
 * of ours paused at all. A frame announcing more than `maxFrame`
 * bytes is refused before its body is read. Each read waits at most
 * `idleTimeout` ms for its frame.
 *
 * Writing: a write waits for the stream's `drain` when the stream says its
 * buffer is full. A `FrameWriter` gathers many small frames into one send
 * (one muxer frame, one encrypted transport message, one event on the other
 * side, instead of one of each per frame).
 */

import { StreamClosedError } from '@libp2p/utils'
import { encode as varintEncode } from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { SyncProtocolError } from '../../errors.js'
import { onAbort } from '../../on-abort.js'
import { ByteQueue } from './byte-queue.js'
import type { Stream } from '@libp2p/interface'
import type { AbortOptions } from 'interface-store'

/** The part of a libp2p stream frames use */
export type FrameStream = Pick<Stream, 'addEventListener' | 'removeEventListener' | 'send' | 'pause' | 'resume' | 'readableEnded' | 'readStatus' | 'writeStatus'>

export interface FrameReaderInit {
  /** Largest frame body accepted (bytes) */
  maxFrame: number
  /** Pause the stream when this many unread bytes are buffered */
  highWater: number
  /** Longest wait (ms) for one frame */
  idleTimeout: number
}

/** The largest varint length prefix read (enough for 2^35) */
const MAX_PREFIX = 5

export class FrameReader {
  private readonly stream: FrameStream
  private readonly init: FrameReaderInit
  private readonly buffer = new ByteQueue()
  private ended = false
  private error?: Error
  private paused = false
  private resuming = false
  private wake?: () => void

  constructor (stream: FrameStream, init: FrameReaderInit) {
    this.stream = stream
    this.init = init
    stream.addEventListener('message', this.onMessage)
    stream.addEventListener('remoteCloseWrite', this.onEnd)
    stream.addEventListener('close', this.onClose)
    if (stream.readableEnded) this.ended = true
  }

  /** Stops listening to the stream */
  dispose (): void {
    this.stream.removeEventListener('message', this.onMessage)
    this.stream.removeEventListener('remoteCloseWrite', this.onEnd)
    this.stream.removeEventListener('close', this.onClose)
    this.buffer.clear()
  }

  /**
   * The next frame, or undefined when the remote ended its side cleanly
   * between frames. Throws `SyncProtocolError` for an oversized frame, a
   * frame cut off by the end of the stream, or a wait past `idleTimeout`.
   */
  async next (options?: AbortOptions): Promise<Uint8Array | undefined> {
    const deadline = Date.now() + this.init.idleTimeout
    while (true) {
      options?.signal?.throwIfAborted()
      const frame = this.take()
      if (frame != null) return frame
      if (this.error != null) throw this.error
      if (this.ended) {
        if (this.buffer.byteLength === 0) return undefined
        throw new SyncProtocolError(`Stream ended inside a frame (${this.buffer.byteLength} bytes left over)`)
      }
      const left = deadline - Date.now()
      if (left <= 0) throw new SyncProtocolError(`No frame within ${this.init.idleTimeout} ms`)
      // no whole frame is buffered: the rest of it must come in, however much is
      // (resuming may hand it over at once: looked for again before waiting)
      if (this.paused) {
        this.resumeStream()
        continue
      }
      await this.waitForData(left, options)
    }
  }

  /** Whether a whole frame is buffered, so `next()` would return at once */
  hasFrame (): boolean {
    if (this.buffer.byteLength === 0) return false
    try {
      const prefix = this.buffer.peekVarint(MAX_PREFIX)
      return prefix != null && this.buffer.byteLength >= prefix.bytes + prefix.value
    } catch {
      return false
    }
  }

  /** Takes a whole frame from the buffer, if one is there */
  private take (): Uint8Array | undefined {
    if (this.buffer.byteLength === 0) return undefined
    let prefix: { value: number, bytes: number } | undefined
    try {
      prefix = this.buffer.peekVarint(MAX_PREFIX)
    } catch {
      throw new SyncProtocolError('Frame length prefix is not a valid varint')
    }
    if (prefix == null) return undefined
    const length = prefix.value
    if (length > this.init.maxFrame) {
      throw new SyncProtocolError(`Frame of ${length} bytes exceeds the limit of ${this.init.maxFrame}`)
    }
    if (this.buffer.byteLength < prefix.bytes + length) return undefined
    this.buffer.skip(prefix.bytes)
    const frame = this.buffer.take(length)
    if (this.paused && this.buffer.byteLength < this.init.highWater / 2) this.resumeStream()
    return frame
  }

  private async waitForData (ms: number, options?: AbortOptions): Promise<void> {
    // onAbort would call finish before it returns: not waited on at all
    if (options?.signal?.aborted === true) return
    await new Promise<void>(resolve => {
      const finish = (): void => {
        clearTimeout(timer)
        off?.()
        this.wake = undefined
        resolve()
      }
      const timer = setTimeout(finish, ms)
      // the sync client's signal lives as long as the store: no listener per wait (see on-abort.ts)
      const off = options?.signal == null ? undefined : onAbort(options.signal, finish)
      this.wake = finish
    })
  }

  private readonly onMessage = (evt: { data: Uint8Array | Uint8ArrayList }): void => {
    this.buffer.append(evt.data)
    if (!this.resuming) this.pauseIfFull()
    this.wake?.()
  }

  private pauseIfFull (): void {
    // only while a whole frame waits to be taken: a buffer holding part of
    // one (a frame larger than the mark) needs the rest before it can drain.
    // A stream that is closing or closed throws on pause(), and sends nothing more anyway
    if (!this.paused && this.buffer.byteLength > this.init.highWater && this.stream.readStatus === 'readable' && this.hasFrame()) {
      this.paused = true
      this.stream.pause()
    }
  }

  /**
   * Resumes the stream, then pauses it again if what it handed over while
   * resuming filled the buffer. Not from inside `resume()`: a libp2p 3
   * stream hands its buffered data over first and tells the muxer to
   * resume after, so a `pause()` made from that hand-over is undone for the
   * muxer (it grants the sender window again) while the stream stays
   * paused and buffers all that comes, until it aborts the stream for its
   * read buffer's size (4 MB).
   */
  private resumeStream (): void {
    this.paused = false
    // nothing to resume once the stream is closing or closed (resume() would throw)
    if (this.stream.readStatus !== 'paused') return
    this.resuming = true
    try {
      this.stream.resume()
    } finally {
      this.resuming = false
    }
    this.pauseIfFull()
  }

  private readonly onEnd = (): void => {
    this.ended = true
    this.wake?.()
  }

  private readonly onClose = (evt: Event & { error?: Error }): void => {
    this.ended = true
    if (evt.error != null) this.error = evt.error
    this.wake?.()
  }
}

/** Writes one frame, waiting for the stream to drain when its buffer is full */
export async function writeFrame (stream: FrameStream, bytes: Uint8Array, options?: AbortOptions): Promise<void> {
  if (!stream.send(new Uint8ArrayList(varintEncode(bytes.byteLength), bytes))) {
    await drained(stream, options)
  }
}

/**
 * Waits, after a `send()` that returned false, for the stream's next
 * `drain` event; rejects when the stream closes first or the signal aborts.
 *
 * Not `stream.onDrain()`: `@libp2p/utils` 7.4 keeps the promise it made for
 * the first drain and hands that same, settled, promise to every later
 * call, so from the second stall on a writer would not wait at all: a
 * sync server would queue the rest of its reply in the muxer's write
 * buffer, however slowly the asker reads.
 */
export async function drained (stream: FrameStream, options?: AbortOptions): Promise<void> {
  options?.signal?.throwIfAborted()
  const closed = (): Error => new StreamClosedError('The stream closed while a write waited to be sent')
  if (stream.writeStatus === 'closed') throw closed()
  await new Promise<void>((resolve, reject) => {
    let off: (() => void) | undefined
    const settle = (err?: Error): void => {
      stream.removeEventListener('drain', onDrain)
      stream.removeEventListener('close', onClose)
      off?.()
      if (err == null) resolve()
      else reject(err)
    }
    const onDrain = (): void => { settle() }
    const onClose = (evt: Event & { error?: Error }): void => { settle(evt.error ?? closed()) }
    stream.addEventListener('drain', onDrain)
    stream.addEventListener('close', onClose)
    const signal = options?.signal
    if (signal != null) off = onAbort(signal, () => { settle(signal.reason) })
  })
}

/**
 * Gathers frames and sends them together once `flushAt` bytes are waiting
 * (or on `flush()`): a stream of small blocks costs one send per ~`flushAt`
 * bytes instead of one per block. Frames are sent in the order written.
 */
export class FrameWriter {
  private readonly stream: FrameStream
  private readonly flushAt: number
  private pending = new Uint8ArrayList()

  constructor (stream: FrameStream, flushAt: number) {
    this.stream = stream
    this.flushAt = flushAt
  }

  /** Bytes written and not sent yet */
  get waiting (): number {
    return this.pending.byteLength
  }

  /** Adds a frame; sends what is waiting when that reaches `flushAt` bytes */
  async write (bytes: Uint8Array, options?: AbortOptions): Promise<void> {
    this.pending.append(varintEncode(bytes.byteLength), bytes)
    if (this.pending.byteLength >= this.flushAt) await this.flush(options)
  }

  /** Sends every waiting frame, waiting for the stream to drain when its buffer is full */
  async flush (options?: AbortOptions): Promise<void> {
    if (this.pending.byteLength === 0) return
    const out = this.pending
    this.pending = new Uint8ArrayList()
    if (!this.stream.send(out)) {
      await drained(this.stream, options)
    }
  }
}

/**
 * An abort signal that fires when `kick()` has not been called for `ms`,
 * or when the parent signal fires. One timer, re-armed lazily; `stop()`
 * clears it.
 */
export class IdleWatchdog {
  private readonly controller = new AbortController()
  private readonly ms: number
  private last = Date.now()
  private timer?: ReturnType<typeof setTimeout>
  public readonly signal: AbortSignal

  constructor (ms: number, parent?: AbortSignal) {
    this.ms = ms
    this.signal = parent == null ? this.controller.signal : AbortSignal.any([parent, this.controller.signal])
    this.arm(ms)
  }

  kick (): void {
    this.last = Date.now()
  }

  stop (): void {
    clearTimeout(this.timer)
    this.timer = undefined
  }

  private arm (ms: number): void {
    this.timer = setTimeout(() => {
      const idle = Date.now() - this.last
      if (idle >= this.ms) {
        this.timer = undefined
        this.controller.abort(new SyncProtocolError(`Sync stream idle for ${this.ms} ms`))
      } else {
        this.arm(this.ms - idle)
      }
    }, ms)
  }
}
