/**
 * A bounded queue of received payloads behind a Broadcaster's `next()`:
 * payloads that arrive while nobody waits are kept (the oldest dropped
 * beyond the bounds), and `next()` calls that arrive first wait for one.
 * The pubsub broadcaster uses it; so can a Broadcaster of your own.
 *
 * The queue is bounded both by count and by bytes (a payload's bytes plus an
 * estimate for the heads decoded with it), so padded payloads cannot grow
 * it past `maxBytes` however few they are. A payload larger than `maxBytes`
 * is dropped on arrival.
 */

import { AbortError } from 'abort-error'
import { onAbort } from '../on-abort.js'
import type { CarriedBlock } from '../codec/broadcast-blocks.js'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/** A received payload with what the transport knows about it */
export interface ReceivedPayload {
  data: Uint8Array
  /** Who announced it (a peer id string), when the transport knows */
  from?: string
  /** Its heads by DAG name, when the transport decoded it already */
  heads?: Map<string, CID[]>
  /**
   * The head blocks it carries, not yet checked against their CIDs, when
   * the transport decoded it already (with `heads`); views into `data`, so
   * they cost no memory beside it
   */
  blocks?: CarriedBlock[]
}

/** The part of a Broadcaster that delivers payloads */
export interface PayloadSource {
  next(options?: AbortOptions): Promise<Uint8Array>
  nextPayload?(options?: AbortOptions): Promise<ReceivedPayload>
}

/** The next payload of `source`: `nextPayload()` when it has one, else the bytes of `next()` alone */
export async function nextPayloadOf (source: PayloadSource, options?: AbortOptions): Promise<ReceivedPayload> {
  return source.nextPayload != null ? source.nextPayload(options) : { data: await source.next(options) }
}

interface Waiter {
  resolve(payload: ReceivedPayload): void
  reject(err: Error): void
}

/** Payload bytes kept by default: 16 MiB */
export const DEFAULT_MAX_QUEUED_BYTES = 16 * 1024 * 1024

/** Memory counted per decoded head kept with a payload (a CID object and its bytes) */
const BYTES_PER_DECODED_HEAD = 256

export class PayloadQueue {
  /** Payloads dropped because the queue was full or they were too large */
  public dropped = 0
  private readonly max: number
  private readonly maxBytes: number
  private readonly queued: ReceivedPayload[] = []
  private queuedBytes = 0
  private readonly waiters = new Set<Waiter>()
  private closed?: Error

  /**
   * @param max - payloads kept while nobody calls `next()`
   * @param maxBytes - bytes of payloads kept while nobody calls `next()`
   */
  constructor (max: number, maxBytes: number = DEFAULT_MAX_QUEUED_BYTES) {
    this.max = max
    this.maxBytes = maxBytes
  }

  /** Payloads waiting for a `next()` call */
  get size (): number {
    return this.queued.length
  }

  /** Bytes of the payloads waiting for a `next()` call */
  get bytes (): number {
    return this.queuedBytes
  }

  /** Up to `count` kept payloads, oldest first, without taking them */
  peek (count: number): Uint8Array[] {
    return this.queued.slice(0, count).map(p => p.data)
  }

  /** Hands a payload to the oldest waiting `next()`, or keeps it. Ignored once closed. */
  push (data: Uint8Array, extra: Omit<ReceivedPayload, 'data'> = {}): void {
    if (this.closed != null) return
    const payload: ReceivedPayload = { ...extra, data }
    const waiter = this.waiters.values().next().value
    if (waiter != null) {
      this.waiters.delete(waiter)
      waiter.resolve(payload)
      return
    }
    const cost = costOf(payload)
    if (cost > this.maxBytes) {
      this.dropped++
      return
    }
    while (this.queued.length > 0 && (this.queued.length >= this.max || this.queuedBytes + cost > this.maxBytes)) {
      this.take()
      this.dropped++
    }
    this.queued.push(payload)
    this.queuedBytes += cost
  }

  /** The oldest kept payload, or the next one pushed; rejects with AbortError when aborted or closed */
  async next (options?: AbortOptions): Promise<Uint8Array> {
    return (await this.nextPayload(options)).data
  }

  /** Like `next()`, with what the transport knows of the payload */
  async nextPayload (options?: AbortOptions): Promise<ReceivedPayload> {
    options?.signal?.throwIfAborted()
    if (this.closed != null) throw this.closed
    const queued = this.take()
    if (queued != null) return queued
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve: (payload) => {
          off?.()
          resolve(payload)
        },
        reject: (err) => {
          off?.()
          reject(err)
        }
      }
      // the reader's signal lives as long as the store: no listener per payload (see on-abort.ts)
      const off = options?.signal == null
        ? undefined
        : onAbort(options.signal, () => {
          this.waiters.delete(waiter)
          reject(new AbortError())
        })
      this.waiters.add(waiter)
    })
  }

  /** Rejects every waiting and later `next()` with `err` and forgets the kept payloads */
  close (err: Error = new AbortError('The broadcaster has been stopped')): void {
    this.closed ??= err
    for (const waiter of this.waiters) waiter.reject(this.closed)
    this.waiters.clear()
    this.queued.length = 0
    this.queuedBytes = 0
  }

  private take (): ReceivedPayload | undefined {
    const payload = this.queued.shift()
    if (payload != null) this.queuedBytes -= costOf(payload)
    return payload
  }
}

function costOf (payload: ReceivedPayload): number {
  let heads = 0
  for (const cids of payload.heads?.values() ?? []) heads += cids.length
  return payload.data.byteLength + heads * BYTES_PER_DECODED_HEAD
}
