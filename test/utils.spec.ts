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

  it('returns the value in time, and holds nothing on the caller\'s signal after: one listener of its own however many calls, no callback left', async () => {
    const controller = new AbortController()
    const seen: AbortSignal[] = []
    for (let i = 0; i < 50; i++) {
      const value = await withTimeout(controller.signal, 60_000, async signal => {
        if (signal != null) seen.push(signal)
        return i
      })
      expect(value).to.equal(i)
    }
    expect(seen).to.have.length(50)
    expect(seen[0]).to.not.equal(controller.signal)
    expect(getEventListeners(controller.signal, 'abort')).to.have.length(1)
    // the calls are over: aborting the caller reaches none of their signals
    controller.abort()
    expect(seen.filter(s => s.aborted)).to.have.length(0)
  })

  it('a caller\'s abort reaches the callee\'s signal while it runs, with the caller\'s reason', async () => {
    const controller = new AbortController()
    const reason = new Error('caller gone')
    let inner: AbortSignal | undefined
    const pending = withTimeout(controller.signal, 60_000, async signal => {
      inner = signal
      return untilAborted(signal)
    })
    controller.abort(reason)
    await expect(pending).to.eventually.be.rejected.with.property('name', 'AbortError')
    expect(inner?.aborted).to.equal(true)
    expect(inner?.reason).to.equal(reason)
  })

  it('clears its timer as soon as fn settles, resolved or rejected (none is left in the timer list for the whole timeout)', async () => {
    const armed = new Set<unknown>()
    const realSet = globalThis.setTimeout
    const realClear = globalThis.clearTimeout
    globalThis.setTimeout = ((fn: () => void, ms?: number) => {
      const timer = realSet(fn, ms)
      armed.add(timer)
      return timer
    }) as typeof setTimeout
    globalThis.clearTimeout = ((timer?: Parameters<typeof clearTimeout>[0]) => {
      armed.delete(timer)
      realClear(timer)
    }) as typeof clearTimeout
    try {
      let during = 0
      expect(await withTimeout(undefined, 600_000, async () => { during = armed.size; return 'ok' })).to.equal('ok')
      expect(during, 'one timer while fn runs').to.equal(1)
      expect(armed.size, 'after a value').to.equal(0)
      await expect(withTimeout(undefined, 600_000, async () => { during = armed.size; throw new Error('failed') })).to.eventually.be.rejected.with.property('message', 'failed')
      expect(during).to.equal(1)
      expect(armed.size, 'after a failure').to.equal(0)
    } finally {
      globalThis.setTimeout = realSet
      globalThis.clearTimeout = realClear
    }
  })

  it('0 ms: no timeout, the caller\'s own signal is passed on', async () => {
    const controller = new AbortController()
    const seen = await withTimeout(controller.signal, 0, async signal => signal)
    expect(seen).to.equal(controller.signal)
  })
})
