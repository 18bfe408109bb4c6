/**
 * The small shared helpers of src/utils.ts: `withTimeout`'s errors and
 * clean-up.
 */

import { getEventListeners } from 'node:events'
import { AbortError } from 'abort-error'
import { expect } from 'aegir/chai'
import { TimeoutError, withTimeout } from '../src/utils.js'

/** Waits for the signal, then rejects as many libraries do: with a plain AbortError */
async function untilAborted (signal: AbortSignal | undefined): Promise<never> {
  return new Promise((resolve, reject) => {
    signal?.addEventListener('abort', () => { reject(new AbortError()) }, { once: true })
  })
}

describe('withTimeout', () => {
  it('rejects with libp2p\'s TimeoutError naming the time, whatever the callee threw on the abort', async () => {
    const err = await withTimeout(undefined, 20, untilAborted).then(() => undefined, (e: unknown) => e)
    expect(err).to.be.an.instanceOf(TimeoutError)
    expect(err).to.have.property('name', 'TimeoutError')
    expect(err).to.have.property('message', 'Timed out after 20 ms')
    // what the callee threw stays reachable (the walker looks for a DAG syncer's NoPeersAskedError behind it)
    expect(err).to.have.nested.property('cause.name', 'AbortError')
  })

  it('a caller\'s abort is the callee\'s error, not a timeout', async () => {
    const controller = new AbortController()
    const pending = withTimeout(controller.signal, 60_000, untilAborted)
    controller.abort()
    const err = await pending.then(() => undefined, (e: unknown) => e)
    expect(err).to.have.property('name', 'AbortError')
  })

  it('returns the value in time and leaves no listener on the caller\'s signal', async () => {
    const controller = new AbortController()
    let seen: AbortSignal | undefined
    const value = await withTimeout(controller.signal, 60_000, async signal => {
      seen = signal
      expect(getEventListeners(controller.signal, 'abort')).to.have.length(1)
      return 42
    })
    expect(value).to.equal(42)
    expect(seen).to.not.equal(controller.signal)
    expect(getEventListeners(controller.signal, 'abort')).to.have.length(0)
  })

  it('0 ms: no timeout, the caller\'s own signal is passed on', async () => {
    const controller = new AbortController()
    const seen = await withTimeout(controller.signal, 0, async signal => signal)
    expect(seen).to.equal(controller.signal)
  })
})
