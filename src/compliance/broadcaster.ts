/**
 * The `Broadcaster` compliance suite: what every transport that carries
 * heads between replicas must do, as mocha tests any implementation can run
 * (the way js-stores' `interface-datastore-tests` checks every Datastore).
 *
 * Call `broadcasterTests(setup)` inside a `describe` of a mocha run; it
 * defines the tests with mocha's globals and needs no assertion library.
 * Each test gets a fresh pair from `setup()` and hands it back to
 * `teardown()`.
 *
 * The contract it checks (the engine relies on each point):
 * - what one replica broadcasts reaches the other byte for byte, through
 *   `next()` (and `nextPayload()` when the transport has it); delivery may
 *   lose, repeat or reorder payloads — go-ds-crdt rebroadcasts its heads —
 *   so the suite rebroadcasts until a payload arrives and allows duplicates;
 * - a `next()` waiting for a payload resolves when one arrives;
 * - `next()` and `broadcast()` with an aborted signal reject at once, a
 *   waiting `next()` rejects when its signal aborts, and a payload that
 *   arrives after that is not lost to the aborted call;
 * - payloads up to a full broadcast (MAX_BROADCAST_HEADS heads) arrive whole.
 * Payloads are valid broadcast messages, since a transport may validate them.
 */

import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { encodeBroadcast, MAX_BROADCAST_HEADS } from '../codec/broadcast.js'
import type { Broadcaster } from '../engine/replicator.js'

/** Two broadcasters on one topic: what `sender` broadcasts reaches `receiver` */
export interface BroadcasterPair<B extends Broadcaster = Broadcaster> {
  sender: B
  receiver: B
}

export interface BroadcasterTestSetup<B extends Broadcaster = Broadcaster> {
  /** Makes a connected pair, ready to deliver (subscriptions made) */
  setup(): Promise<BroadcasterPair<B>>
  /** Stops the pair and frees what `setup` made */
  teardown(pair: BroadcasterPair<B>): Promise<void>
  /**
   * How long (ms) a payload may take to arrive before a test fails
   *
   * @default 10000
   */
  deliveryTimeout?: number
  /**
   * How often (ms) an undelivered payload is broadcast again
   *
   * @default 250
   */
  rebroadcastEvery?: number
}

export const DEFAULT_DELIVERY_TIMEOUT = 10_000
export const DEFAULT_REBROADCAST_EVERY = 250

/** A valid broadcast of `count` heads, distinct for each `seed` */
async function payload (seed: string, count = 1): Promise<Uint8Array> {
  const heads = []
  for (let i = 0; i < count; i++) {
    const digest = await sha256.digest(new TextEncoder().encode(`${seed}/${i}`))
    heads.push({ cid: CID.createV1(0x70, digest), dagName: '' })
  }
  return encodeBroadcast(heads)
}

function assert (condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(message)
}

function sameBytes (a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((byte, i) => byte === b[i])
}

function hex (bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, 16), b => b.toString(16).padStart(2, '0')).join('') + (bytes.byteLength > 16 ? '…' : '')
}

/** Rejects with the error `promise` rejected with, or fails when it resolves */
async function rejection (promise: Promise<unknown>, what: string): Promise<Error> {
  const outcome = await promise.then(() => undefined, (err: Error) => err)
  assert(outcome != null, `${what} resolved; it should reject`)
  return outcome
}

function isAbort (err: Error): boolean {
  return err.name === 'AbortError' || /abort/i.test(err.message)
}

/**
 * Defines the Broadcaster compliance tests (mocha `describe`/`it`) against
 * the pairs `setup` makes.
 *
 * @example
 * ```ts
 * import { broadcasterTests } from 'datastore-crdt/compliance'
 *
 * describe('my broadcaster', () => {
 *   broadcasterTests({
 *     async setup () { return { sender: await mine('a'), receiver: await mine('b') } },
 *     async teardown ({ sender, receiver }) { await sender.stop(); await receiver.stop() }
 *   })
 * })
 * ```
 */
export function broadcasterTests <B extends Broadcaster> (test: BroadcasterTestSetup<B>): void {
  const deliveryTimeout = test.deliveryTimeout ?? DEFAULT_DELIVERY_TIMEOUT
  const every = test.rebroadcastEvery ?? DEFAULT_REBROADCAST_EVERY

  /**
   * Broadcasts each payload until `receive` has returned it, collecting
   * everything received (duplicates included) until all have arrived
   */
  async function deliver (pair: BroadcasterPair<B>, payloads: Uint8Array[], receive: (signal: AbortSignal) => Promise<Uint8Array>): Promise<Uint8Array[]> {
    const signal = AbortSignal.timeout(deliveryTimeout)
    const received: Uint8Array[] = []
    const missing = (): Uint8Array[] => payloads.filter(p => !received.some(r => sameBytes(r, p)))
    const state = { done: false }
    const sending = (async () => {
      for (let round = 0; round < 100_000 && !state.done && !signal.aborted; round++) {
        for (const p of missing()) await pair.sender.broadcast(p, { signal })
        await new Promise(resolve => setTimeout(resolve, every))
      }
    })()
    try {
      for (let i = 0; i < 100_000 && missing().length > 0; i++) {
        received.push(await receive(signal).catch((err: Error) => {
          throw new Error(`${missing().length} of ${payloads.length} payloads did not arrive within ${deliveryTimeout} ms (${err.message})`)
        }))
      }
    } finally {
      state.done = true
      await sending.catch(() => {})
    }
    return received
  }

  describe('Broadcaster compliance', function () {
    this.timeout(deliveryTimeout * 3)
    let pair: BroadcasterPair<B> | undefined

    beforeEach(async () => { pair = await test.setup() })
    afterEach(async () => {
      if (pair != null) await test.teardown(pair)
      pair = undefined
    })

    const current = (): BroadcasterPair<B> => {
      assert(pair != null, 'setup() made no pair')
      return pair
    }

    it('delivers a payload to the other replica byte for byte', async () => {
      const p = await payload('one')
      const received = await deliver(current(), [p], async signal => current().receiver.next({ signal }))
      for (const r of received) assert(sameBytes(r, p), `received ${hex(r)} instead of ${hex(p)}`)
    })

    it('delivers every payload of a burst (in any order, duplicates allowed) and nothing else', async () => {
      const payloads = await Promise.all(['a', 'b', 'c', 'd', 'e'].map(async s => payload(`burst-${s}`)))
      const received = await deliver(current(), payloads, async signal => current().receiver.next({ signal }))
      for (const r of received) assert(payloads.some(p => sameBytes(p, r)), `received ${hex(r)}, which was never broadcast`)
    })

    it(`delivers a full broadcast of ${MAX_BROADCAST_HEADS} heads whole`, async () => {
      const p = await payload('full', MAX_BROADCAST_HEADS)
      const received = await deliver(current(), [p], async signal => current().receiver.next({ signal }))
      assert(received.every(r => sameBytes(r, p)), 'a large payload arrived changed')
    })

    it('nextPayload(), where implemented, hands over the same bytes as data', async () => {
      const { receiver } = current()
      const p = await payload('with-payload')
      if (receiver.nextPayload == null) {
        assert(receiver.nextPayload === undefined, 'nextPayload is neither a method nor absent')
        return
      }
      const received = await deliver(current(), [p], async signal => {
        const next = await receiver.nextPayload?.({ signal })
        assert(next != null && next.data instanceof Uint8Array, 'nextPayload() resolved without data')
        return next.data
      })
      assert(received.every(r => sameBytes(r, p)), 'nextPayload() data differs from what was broadcast')
    })

    it('next() and broadcast() with an aborted signal reject at once', async () => {
      const { sender, receiver } = current()
      const signal = AbortSignal.abort()
      const fromNext = await rejection(receiver.next({ signal }), 'next() with an aborted signal')
      assert(isAbort(fromNext), `next() rejected with ${fromNext.name}: ${fromNext.message}, not an abort`)
      const fromBroadcast = await rejection(sender.broadcast(await payload('aborted'), { signal }), 'broadcast() with an aborted signal')
      assert(isAbort(fromBroadcast), `broadcast() rejected with ${fromBroadcast.name}: ${fromBroadcast.message}, not an abort`)
    })

    it('a waiting next() rejects when its signal aborts, and the next payload still arrives', async () => {
      const { receiver } = current()
      const controller = new AbortController()
      const waiting = receiver.next({ signal: controller.signal })
      controller.abort()
      const err = await rejection(waiting, 'next() whose signal aborted')
      assert(isAbort(err), `next() rejected with ${err.name}: ${err.message}, not an abort`)
      const p = await payload('after-abort')
      const received = await deliver(current(), [p], async signal => receiver.next({ signal }))
      assert(received.some(r => sameBytes(r, p)), 'the payload after an aborted next() was lost')
    })
  })
}
