/**
 * Small helpers shared by the engine's files.
 */

import { TimeoutError } from '@libp2p/interface'
import { AbortError } from 'abort-error'
import { onAbort } from './on-abort.js'
import type { AbortOptions } from 'interface-store'

/** Resolves after `ms`, or rejects with the signal's reason when it fires (the `delay` package) */
export { default as delay } from 'delay'

/** Thrown when `withTimeout` runs out of time: libp2p's, so callers match one `TimeoutError` */
export { TimeoutError }

/**
 * Runs `fn` with a signal that fires when the given one does or after `ms`
 * (0 = never), as libp2p bounds its own requests. When the time runs out
 * (and the caller did not abort) the call rejects with libp2p's
 * `TimeoutError`, whatever `fn` made of the abort; what `fn` threw is its
 * `cause` (a DAG syncer's `NoPeersAskedError` must still be seen behind the
 * timeout).
 *
 * It runs for every block a walk fetches, so it leaves nothing behind once
 * `fn` settles: the timer is cleared then (not `AbortSignal.timeout()`,
 * whose timer stays in the runtime's timer list until it fires,
 * `dagSyncerTimeout`, or a full garbage collection finds its signal
 * unreachable: ~900 bytes per call kept, measured), and the caller's signal,
 * usually a walk's that lives long, is watched through `onAbort` (see
 * on-abort.ts), not a listener added and removed per call. The timer is
 * unref'd, so it never keeps the process alive.
 */
export async function withTimeout <T> (signal: AbortSignal | undefined, ms: number, fn: (signal: AbortSignal | undefined) => Promise<T>): Promise<T> {
  if (ms <= 0) return fn(signal)
  const controller = new AbortController()
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    controller.abort(new TimeoutError(`Timed out after ${ms} ms`))
  }, ms)
  // Node's timers keep the process alive unless unref'd; browsers' are numbers
  ;(timer as { unref?(): void }).unref?.()
  const off = signal == null ? undefined : onAbort(signal, () => { controller.abort(signal.reason) })
  try {
    return await fn(controller.signal)
  } catch (err) {
    if (timedOut && signal?.aborted !== true) throw Object.assign(new TimeoutError(`Timed out after ${ms} ms`), { cause: err })
    throw err
  } finally {
    clearTimeout(timer)
    off?.()
  }
}

/** `d` ± 30%, as go-ds-crdt spreads its rebroadcasts */
export function jitter (d: number): number {
  const leeway = d * 0.3
  return Math.max(1, Math.round(d - leeway + Math.random() * leeway * 2))
}

/**
 * A counting semaphore that hands free slots to waiters in arrival order,
 * so several users sharing it each get their turn.
 */
export class Slots {
  private free: number
  private readonly waiters: Array<() => void> = []

  constructor (count: number) {
    this.free = count
  }

  /** Slots taken or waited for */
  get waiting (): number {
    return this.waiters.length
  }

  /** Resolves once a slot is held; rejects with an AbortError (and holds nothing) when aborted first */
  async acquire (options?: AbortOptions): Promise<void> {
    options?.signal?.throwIfAborted()
    if (this.free > 0 && this.waiters.length === 0) {
      this.free--
      return
    }
    await new Promise<void>((resolve, reject) => {
      const grant = (): void => {
        off?.()
        resolve()
      }
      // a walk's signal lives long: watched through onAbort, not a listener per wait (see on-abort.ts)
      const off = options?.signal == null
        ? undefined
        : onAbort(options.signal, () => {
          const at = this.waiters.indexOf(grant)
          if (at >= 0) this.waiters.splice(at, 1)
          reject(new AbortError())
        })
      this.waiters.push(grant)
    })
  }

  release (): void {
    const next = this.waiters.shift()
    if (next != null) next()
    else this.free++
  }
}

/**
 * Blocks held in memory for a consumer that takes each once (a head's
 * turn, the walker), with their count and total bytes kept, so the holder
 * can bound both. Insertion order is age: `oldest()` is the first a holder
 * evicts. Which entries to drop when full is the holder's policy; this
 * keeps the accounting right whatever it drops.
 */
export class BlockHandoff<V extends { bytes: Uint8Array }> {
  private readonly entries = new Map<string, V>()
  private bytes = 0

  constructor (private readonly maxBlocks: number, private readonly maxBytes: number) {}

  /** Blocks held */
  get size (): number {
    return this.entries.size
  }

  /** Whether a block of `byteLength` bytes fits within both bounds as things are */
  fits (byteLength: number): boolean {
    return this.entries.size < this.maxBlocks && this.bytes + byteLength <= this.maxBytes
  }

  /** The longest-held entry, if any */
  oldest (): [string, V] | undefined {
    return this.entries.entries().next().value
  }

  /** Holds `value` under `key`, replacing what was held there (bounds are the caller's to check first) */
  set (key: string, value: V): void {
    this.take(key)
    this.entries.set(key, value)
    this.bytes += value.bytes.byteLength
  }

  /** Removes and returns what is held under `key` */
  take (key: string): V | undefined {
    const found = this.entries.get(key)
    if (found == null) return undefined
    this.entries.delete(key)
    this.bytes -= found.bytes.byteLength
    return found
  }

  clear (): void {
    this.entries.clear()
    this.bytes = 0
  }
}
