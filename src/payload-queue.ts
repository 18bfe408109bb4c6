/**
 * A bounded queue of received payloads behind a Broadcaster's `next()`:
 * payloads that arrive while nobody waits are kept (the oldest dropped
 * beyond the bound), and `next()` calls that arrive first wait for one.
 * The pubsub broadcaster uses it; so can a Broadcaster of your own.
 */

import { AbortError } from 'abort-error'
import type { AbortOptions } from 'interface-store'

interface Waiter {
  resolve(data: Uint8Array): void
  reject(err: Error): void
}

export class PayloadQueue {
  /** Payloads dropped because the queue was full */
  public dropped = 0
  private readonly max: number
  private readonly queued: Uint8Array[] = []
  private readonly waiters = new Set<Waiter>()
  private closed?: Error

  /**
   * @param max - payloads kept while nobody calls `next()`
   */
  constructor (max: number) {
    this.max = max
  }

  /** Payloads waiting for a `next()` call */
  get size (): number {
    return this.queued.length
  }

  /** Up to `count` kept payloads, oldest first, without taking them */
  peek (count: number): Uint8Array[] {
    return this.queued.slice(0, count)
  }

  /** Hands a payload to the oldest waiting `next()`, or keeps it. Ignored once closed. */
  push (data: Uint8Array): void {
    if (this.closed != null) return
    const waiter = this.waiters.values().next().value
    if (waiter != null) {
      this.waiters.delete(waiter)
      waiter.resolve(data)
      return
    }
    if (this.queued.length >= this.max) {
      this.queued.shift()
      this.dropped++
    }
    this.queued.push(data)
  }

  /** The oldest kept payload, or the next one pushed; rejects with AbortError when aborted or closed */
  async next (options?: AbortOptions): Promise<Uint8Array> {
    options?.signal?.throwIfAborted()
    if (this.closed != null) throw this.closed
    const queued = this.queued.shift()
    if (queued != null) return queued
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        this.waiters.delete(waiter)
        reject(new AbortError())
      }
      const waiter: Waiter = {
        resolve: (data) => {
          options?.signal?.removeEventListener('abort', onAbort)
          resolve(data)
        },
        reject: (err) => {
          options?.signal?.removeEventListener('abort', onAbort)
          reject(err)
        }
      }
      options?.signal?.addEventListener('abort', onAbort, { once: true })
      this.waiters.add(waiter)
    })
  }

  /** Rejects every waiting and later `next()` with `err` and forgets the kept payloads */
  close (err: Error = new AbortError('The broadcaster has been stopped')): void {
    this.closed ??= err
    for (const waiter of this.waiters) waiter.reject(this.closed)
    this.waiters.clear()
    this.queued.length = 0
  }
}
